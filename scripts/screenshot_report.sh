#!/usr/bin/env bash
# Renders an HTML report (convnet train --report) with headless Chromium
# to a PNG screenshot of the whole page, to look at it as a browser shows it.
#
#   scripts/screenshot_report.sh report.html report.png [WIDTH [HEIGHT]]
#
# The window is WIDTH x HEIGHT pixels (default 1400 x 3800, tall enough for
# a whole report; the rest stays white).
#
# Needs Debian's chromium (apt-get install -y chromium). The page needs no
# network: its pictures are embedded.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT.html SCREENSHOT.png [WIDTH [HEIGHT]]" >&2
  exit 2
fi
page=$(realpath "$1")
out=$(realpath -m "$2")
width=${3:-1400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "chromium not found: apt-get install -y chromium" >&2
  exit 1
fi
[ -f "$page" ] || { echo "$1: no such file" >&2; exit 1; }
height=${4:-3800}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --window-size="$width,$height" \
  --screenshot="$out" "file://$page" 2>/dev/null
[ -s "$out" ] || { echo "no screenshot was written" >&2; exit 1; }
echo "Wrote $out (${width}x${height})"
