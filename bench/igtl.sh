#!/usr/bin/env bash
# OpenIGTLink loopback benchmark of pinhole-server (see bench/benches/igtl_latency.rs):
# TRANSFORM -> GuidanceMetrics STRING at 1 kHz for 10 s (p50/p99 latency, server CPU) and a
# 512x512 uint8 IMAGE relayed to 10 clients at 60 fps. Prints JSON. `--quick`: 2 s runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p pinhole-bench --bench igtl_latency -- "$@"
