#!/usr/bin/env bash
# The viewer on the full chest CT (#19): how soon `pinhole serve` answers, and the
# fluoroscopy panel's C-arm slider round trip measured in headless Chromium (median of 10
# moves, slider input -> new 512² image with organ tint decoded), plus the server-side
# parts (`viewer-drr`). Prints JSON lines. Needs node + web/node_modules (npm ci in web/)
# and Debian's chromium. No tracker is connected, so the page only renders the DRRs.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/chest-ct
HTTP_PORT=${PINHOLE_HTTP_PORT:-18380}
IGTL_PORT=${PINHOLE_IGTL_PORT:-18945}
cargo build --release --locked -p pinhole -p pinhole-bench --bin pinhole --bin viewer-drr
(cd web && npm run build --silent >/dev/null)
target/release/viewer-drr --ct "$DATA/ct.nii.gz" --labels "$DATA/labels.nii.gz" --size 512 --poses 10

log=$(mktemp)
start=$(date +%s.%N)
target/release/pinhole serve --ct "$DATA/ct.nii.gz" --labels "$DATA/labels.nii.gz" \
  --labels-table "$DATA/structures.csv" --unnamed-labels forbid --target kidney_left \
  --http-port "$HTTP_PORT" --igtl-port "$IGTL_PORT" >"$log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true; rm -f "$log"' EXIT
until curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/api/session"; do
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.05
done
answering=$(echo "$(date +%s.%N) - $start" | bc)
echo "{\"serve_answering_s\": $answering, \"ct\": \"$DATA/ct.nii.gz\"}"
node bench/viewer_drr.mjs "http://127.0.0.1:$HTTP_PORT/"
