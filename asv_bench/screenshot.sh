#!/usr/bin/env bash
# Screenshot of the published asv dashboard (after `asv publish`), by headless Chromium, into
# asv_bench/dashboard.png. The asv pages load their data with fetch, so they are served over http
# on 127.0.0.1 rather than opened as files.
#
#   cd asv_bench && asv publish && ./screenshot.sh [URL-HASH] [OUT.png]
#
# URL-HASH picks the page (default: the numba/numpy/torch graph of the Linear forward benchmark);
# "" gives the index. Needs chromium (apt-get install -y chromium); as root it runs --no-sandbox.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
html="$here/.asv/html"
hash="${1-bench_linear.Linear.time_forward?x-axis=shape&y-axis-scale=log}"
out="${2:-$here/dashboard.png}"
size="${WINDOW_SIZE:-1400,900}"
budget="${VIRTUAL_TIME_BUDGET:-20000}"   # ms of page time for the scripts and graphs to finish

[ -f "$html/index.html" ] || { echo "no $html/index.html: run 'asv publish' first" >&2; exit 1; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
profile="$(mktemp -d)"
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$html" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$profile"' EXIT

for _ in $(seq 50); do  # wait until the server answers
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/index.html')" \
        2>/dev/null && break
    sleep 0.1
done

url="http://127.0.0.1:$port/index.html"
[ -n "$hash" ] && url="$url#$hash"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --virtual-time-budget="$budget" \
    --window-size="$size" --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out ($url)"
