#!/usr/bin/env bash
# Soak benchmark of `pinhole serve` (issue 25; see bench/src/bin/igtl-soak.rs):
# 100 OpenIGTLink clients sending TRANSFORM NeedleTipToReference at 100 Hz, 20 WebSocket
# viewers on /ws/guidance, a viewer reading at 2 KiB/s, an OpenIGTLink client that sends
# half a header and goes silent, 4 half-open HTTP connections; /api/health polled once a
# second, the server's RSS sampled. Loopback only. Default 600 s.
#
#   bash bench/igtl_soak.sh [--seconds N] [other igtl-soak flags]
#
# Starts the release `pinhole` on the abdomen CT (target liver:deepest) with
# --max-igtl-clients 128 (the CLI default since issue 25; stated for older builds), on
# ports $IGTL_PORT / $HTTP_PORT (default 28944 / 28080, so that a running server is not
# disturbed). Writes the JSON report to $OUT/soak.json (default target/igtl-soak/) and
# the server's log to $OUT/server.log; prints the goal lines. SKIP_BUILD=1: use the
# binaries already in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PINHOLE_DATA:-../shared/data}
IGTL_PORT=${IGTL_PORT:-28944}
HTTP_PORT=${HTTP_PORT:-28080}
OUT=${OUT:-target/igtl-soak}
mkdir -p "$OUT"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p pinhole -p pinhole-bench --bin pinhole --bin igtl-soak
fi

echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); server diff: $(git diff --stat crates/server 2>/dev/null | tail -1)" >&2
echo "loadavg before: $(cat /proc/loadavg)" >&2

target/release/pinhole serve \
    --ct "$DATA/abdomen-ct/example_ct.nii.gz" \
    --labels "$DATA/abdomen-ct/example_seg.nii.gz" \
    --target liver:deepest \
    --igtl-port "$IGTL_PORT" --http-port "$HTTP_PORT" \
    --max-igtl-clients 128 \
    2>"$OUT/server.log" >"$OUT/server.stdout" &
SERVER=$!
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -INT "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER" 2>/dev/null && { echo "server did not stop on SIGINT within 5 s" >&2; kill -KILL "$SERVER"; }
    fi
    return 0
}
trap stop_server EXIT

for _ in $(seq 240); do
    if curl -fsS "http://127.0.0.1:$HTTP_PORT/api/health" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER" 2>/dev/null || { echo "pinhole serve exited:" >&2; cat "$OUT/server.log" >&2; exit 1; }
    sleep 0.5
done

target/release/igtl-soak --server-pid "$SERVER" --server-log "$OUT/server.log" \
    --igtl-port "$IGTL_PORT" --http-port "$HTTP_PORT" "$@" >"$OUT/soak.json"
echo "loadavg after: $(cat /proc/loadavg)" >&2
stop_server
echo "report: $OUT/soak.json ($(wc -c <"$OUT/soak.json") bytes); server log: $OUT/server.log ($(wc -l <"$OUT/server.log") lines)" >&2
