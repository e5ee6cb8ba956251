#!/usr/bin/env bash
# Benchmark two or more commits in one asv environment, then print `asv compare` of the first
# commit against each of the others.
#
#   cd asv_bench && ./compare.sh [-b REGEX]... [-q] [-f FACTOR] A B [C ...]
#
#   -b REGEX   only the benchmarks matching REGEX (asv run --bench; repeatable). Without it every
#              benchmark runs: about an hour per commit.
#   -q         asv run --quick: one call per benchmark (a smoke comparison; noisy figures)
#   -f FACTOR  the ratio asv compare flags as a change (default 1.1)
#
# Each commit's fastlayers/ and kernels/ are exported (git archive) into a temporary directory and
# put ahead of the installed package with ASV_PYTHONPATH; `asv run --python=same
# --set-commit-hash=<sha>` then times that code with this checkout's benchmarks/. All commits run
# in the same interpreter, so asv files their results under one environment name and `asv compare`
# can pair them. Nothing is installed or uninstalled: the interpreter's own install (e.g. the
# editable `pip install -e` of another checkout) is the same afterwards. The results go to
# results/<machine>/ with the others, so they also appear on the dashboard (asv publish).
#
# The benchmarks are this checkout's: a commit whose kernels lack a name they use shows that
# benchmark as failed or n/a.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
run_args=()
factor=1.1
while getopts "b:qf:h" opt; do
    case "$opt" in
        b) run_args+=(--bench "$OPTARG") ;;
        q) run_args+=(--quick) ;;
        f) factor="$OPTARG" ;;
        *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -ge 2 ] || { echo "usage: $0 [-b REGEX]... [-q] [-f FACTOR] A B [C ...]" >&2; exit 2; }

shas=()
for rev in "$@"; do
    shas+=("$(git rev-parse --verify "$rev^{commit}")")
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/fastlayers-compare-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
asv machine --yes >/dev/null

for sha in "${shas[@]}"; do
    tree="$tmp/${sha:0:12}"
    mkdir -p "$tree"
    git -C .. archive "$sha" fastlayers kernels | tar -x -C "$tree"
    # the commit's code must be what the benchmarks import, not the installed package
    got="$(cd / && PYTHONPATH="$tree" python -c 'import fastlayers, kernels; print(fastlayers.__file__, kernels.__file__)')"
    case "$got" in
        "$tree"/fastlayers/*" $tree"/kernels/*) ;;
        *) echo "the commit's code is not imported first ($got)" >&2; exit 1 ;;
    esac
    echo "== $(git log -1 --format='%h %s' "$sha" | cut -c1-90)"
    ASV_PYTHONPATH="$tree" asv run --python=same --set-commit-hash="$sha" "${run_args[@]}"
done

for sha in "${shas[@]:1}"; do
    echo
    echo "== asv compare ${shas[0]:0:8} ${sha:0:8} (ratio = second / first; below 1: faster)"
    # rows of benchmarks that neither commit ran (outside the -b filter) say nothing: dropped
    asv compare --factor "$factor" "${shas[0]}" "$sha" | grep -Ev '\| +n/a +\| +n/a +\|'
done
