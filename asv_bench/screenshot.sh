#!/usr/bin/env bash
# Screenshot of the published asv dashboard (after `asv publish`), by headless Chromium. The asv
# pages load their data with fetch, so they are served over http on 127.0.0.1 rather than opened
# as files.
#
#   cd asv_bench && asv publish && ./screenshot.sh [URL-HASH] [OUT.png]
#
# URL-HASH picks the page (default: the conv forward at 128x16x14x14 -> 32, numba/numpy/torch by
# commit, a benchmark the committed results/ hold for six commits); "" gives the index. OUT.png
# defaults to .asv/dashboard.png (not tracked): the committed asv_bench/dashboard.png changes only
# when it is named, `./screenshot.sh "" dashboard.png`. Needs chromium (apt-get install -y
# chromium); as root it runs --no-sandbox.
#
# asv's pages load jQuery, flot, bootstrap, ... from CDNs. Offline, the pages are served from a copy
# whose CDN links point at local files in $ASV_JS_DIR (default .asv/js), named as in the links;
# `./screenshot.sh --fetch-js` fills it from the npm registry (npm pack; needs npm).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
html="$here/.asv/html"
jsdir="${ASV_JS_DIR:-$here/.asv/js}"

if [ "${1-}" = "--fetch-js" ]; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent jquery@3.3.1 flot@0.8.3 flot-orderbars@1.0.0 \
        stupid-table-plugin@1.1.3 blueimp-md5@2.19.0 bootstrap@3.1.1 >/dev/null)
    for f in "$tmp"/*.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
    mkdir -p "$jsdir"
    cp "$tmp"/jquery-3.3.1/package/dist/jquery.min.js "$jsdir/jquery-3.3.1.min.js"
    for m in flot time selection categories; do
        src="$tmp/flot-0.8.3/package/jquery.flot.$m.js"
        [ "$m" = flot ] && src="$tmp/flot-0.8.3/package/jquery.flot.js"
        dst="jquery.flot.$m.min.js"; [ "$m" = flot ] && dst="jquery.flot.min.js"
        cp "$src" "$jsdir/$dst"
    done
    cp "$tmp"/flot-orderbars-1.0.0/package/js/jquery.flot.orderBars.js "$jsdir/"
    cp "$tmp"/stupid-table-plugin-1.1.3/package/stupidtable.min.js "$jsdir/"
    cp "$tmp"/blueimp-md5-2.19.0/package/js/md5.min.js "$jsdir/"
    cp "$tmp"/bootstrap-3.1.1/package/dist/js/bootstrap.min.js "$jsdir/"
    cp "$tmp"/bootstrap-3.1.1/package/dist/css/bootstrap.min.css "$jsdir/"
    rm -rf "$tmp"
    echo "asv's JavaScript dependencies in $jsdir"
    exit 0
fi
hash="${1-bench_conv.Conv2d.time_forward?p-shape='128x16x14x14%20-%3E%2032'}"
out="${2:-$here/.asv/dashboard.png}"
mkdir -p "$(dirname "$out")"
size="${WINDOW_SIZE:-1400,900}"
budget="${VIRTUAL_TIME_BUDGET:-20000}"   # ms of page time for the scripts and graphs to finish

[ -f "$html/index.html" ] || { echo "no $html/index.html: run 'asv publish' first" >&2; exit 1; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
profile="$(mktemp -d)"
site="$(mktemp -d)"
trap 'kill "${server-}" 2>/dev/null || true; rm -rf "$profile" "$site"' EXIT
cp -r "$html"/. "$site"/
if [ -d "$jsdir" ]; then  # point the CDN links at the local copies that exist
    mkdir -p "$site/vendor" && cp "$jsdir"/* "$site/vendor/"
    python3 - "$site" <<'PY'
import pathlib, re, sys
site = pathlib.Path(sys.argv[1])
have = {p.name for p in (site / "vendor").iterdir()}
for page in site.glob("*.html"):
    text = page.read_text()
    new = re.sub(r'https://[^"]*/([^/"]+)"',
                 lambda m: f'vendor/{m.group(1)}"' if m.group(1) in have else m.group(0), text)
    # the integrity hashes are of the CDN's minified builds, not of these files
    page.write_text(re.sub(r' integrity="[^"]*"', "", new))
PY
fi
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!

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
