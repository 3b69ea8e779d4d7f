#!/usr/bin/env bash
# End-to-end latency of live ultrasound fusion (issue #20; see
# bench/src/bin/us-fusion-latency.rs): 512 × 512 8-bit IMAGE frames at 30 fps through the
# session's target, a Slicer-like client reading CTReslice + LabelReslice, a tracked
# needle at 60 Hz, a web viewer polling the ultrasound panel's pictures at 10 Hz.
# Twice: idle, then loaded (2 threads spinning on arithmetic beside the server on the
# same cores). Loopback only.
#
#   bash bench/us_fusion.sh [--seconds N] [other us-fusion-latency flags]
#
# Starts the release `pinhole serve` on the abdomen CT (target liver:deepest) on ports
# $IGTL_PORT / $HTTP_PORT (default 28944 / 28080). Writes $OUT/idle.json and
# $OUT/loaded.json (default target/us-fusion/) and the server's log; prints the goal
# lines. SKIP_BUILD=1: use the binaries already in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PINHOLE_DATA:-../shared/data}
IGTL_PORT=${IGTL_PORT:-28944}
HTTP_PORT=${HTTP_PORT:-28080}
OUT=${OUT:-target/us-fusion}
BURN=${BURN_THREADS:-2}
mkdir -p "$OUT"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p pinhole -p pinhole-bench --bin pinhole --bin us-fusion-latency
fi
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); loadavg before: $(cat /proc/loadavg)" >&2

target/release/pinhole serve \
    --ct "$DATA/abdomen-ct/example_ct.nii.gz" \
    --labels "$DATA/abdomen-ct/example_seg.nii.gz" \
    --target liver:deepest \
    --igtl-port "$IGTL_PORT" --http-port "$HTTP_PORT" \
    2>"$OUT/server.log" >"$OUT/server.stdout" &
SERVER=$!
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -INT "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER" 2>/dev/null && kill -KILL "$SERVER"
    fi
    return 0
}
trap stop_server EXIT
for _ in $(seq 240); do
    if curl -fsS "http://127.0.0.1:$HTTP_PORT/api/health" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER" 2>/dev/null || { echo "pinhole serve exited:" >&2; cat "$OUT/server.log" >&2; exit 1; }
    sleep 0.5
done

for run in idle loaded; do
    burn=0; [ "$run" = loaded ] && burn=$BURN
    echo "== $run ($burn burn threads)" >&2
    target/release/us-fusion-latency --igtl-port "$IGTL_PORT" --http-port "$HTTP_PORT" \
        --burn-threads "$burn" "$@" >"$OUT/$run.json"
done
echo "loadavg after: $(cat /proc/loadavg)" >&2
stop_server
echo "reports: $OUT/idle.json, $OUT/loaded.json; server log: $OUT/server.log" >&2
