#!/usr/bin/env bash
# PNG screenshot of the HTML report with headless Chromium (apt-get install chromium).
set -euo pipefail
html=$(readlink -f "${1:-reports/out/report.html}"); png=${2:-docs/report.png}
command -v chromium >/dev/null || { echo "chromium not installed (apt-get install chromium)" >&2; exit 2; }
profile=$(mktemp -d); trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1400,2600 --screenshot="$png" "file://$html" 2>/dev/null
echo "wrote $png"
