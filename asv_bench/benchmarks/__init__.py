"""fastlayers' asv benchmarks: one module per kernel family (mirroring kernels/), plus bench_models
(end-to-end training steps and inference) and bench_coldstart (import + first step, in fresh
processes). Shared helpers live in common.py."""
