"""Print the GFLOP/s of each convolution pass next to the machine's sgemm, measured side by side.

The forward, input-gradient and weight-gradient kernels of kernels/conv.py at (128, C, 14, 14) -> O
channels, 3x3, padding 1 (default 16 -> 32: the cnn's second convolution; 32 -> 64 is cnn-wide's),
PyTorch's forward and forward+backward at the same shape, and a 1024^3 sgemm on one and on all
threads, as medians of interleaved rounds in one process. A pass is 2 N O C KH KW OH OW flops
(231 MFLOP at 16 -> 32).

    cd asv_bench && python conv_gflops.py [--rounds 9] [--channels 32 64]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarks import common  # noqa: E402  (first: settles the thread settings)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--channels", type=int, nargs=2, default=(16, 32), metavar=("IN", "OUT"))
    args = ap.parse_args(argv)

    common.has_torch()   # imports torch (when installed) before any kernel starts Numba's threads
    import numpy as np
    from threadpoolctl import threadpool_limits

    from kernels import conv

    (c, o), n, h, k = args.channels, 128, 14, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((o, c, k, k), dtype=np.float32) / 12
    b = np.zeros(o, np.float32)
    g = rng.standard_normal((n, o, h, h), dtype=np.float32)
    dw, db = np.zeros_like(w), np.zeros_like(b)
    one = (1, 1)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    threads = common.NUM_THREADS

    def sgemm_on(t):
        def run():
            with threadpool_limits(t, user_api="blas"):
                a @ a
        return run

    fns = {"forward": lambda: conv.conv2d_forward(x, w, b, one, one, one),
           "input gradient": lambda: conv.conv2d_backward_input(g, w, x.shape, one, one, one),
           "weight gradient": lambda: conv.conv2d_backward_weight(g, x, one, one, one, dw, db),
           "sgemm 1 thread": sgemm_on(1), f"sgemm {threads} threads": sgemm_on(threads)}
    if common.has_torch():
        torch = common.torch()
        tx, tw, tb = (torch.from_numpy(v).requires_grad_(True) for v in (x, w, b))
        tg = torch.from_numpy(g)

        def torch_fb():
            torch.nn.functional.conv2d(tx, tw, tb, padding=1).backward(tg)
        fns["torch forward"] = lambda: torch.nn.functional.conv2d(tx.detach(), tw.detach(),
                                                                  tb.detach(), padding=1)
        fns["torch forward+backward"] = torch_fb
    med = common.interleaved_medians(fns, rounds=args.rounds)
    flops = 2 * n * o * c * k * k * h * h
    print("| pass | median | GFLOP/s |\n|---|---:|---:|")
    for name, t in med.items():
        f = 2 * 1024 ** 3 if name.startswith("sgemm") else flops * (3 if "backward" in name else 1)
        print(f"| {name} | {t * 1e3:.2f} ms | {f / t / 1e9:.0f} |")
    ours = sum(med[p] for p in ("forward", "input gradient", "weight gradient"))
    print(f"\nfastlayers forward+backward {ours * 1e3:.2f} ms ({3 * flops / ours / 1e9:.0f} GFLOP/s); "
          f"{common.env_summary()}")


if __name__ == "__main__":
    main()
