#!/usr/bin/env bash
# The issue-8 acceptance study: 50 X-rays of the chest CT simulated at random poses
# (rotations ±10°, translations ±20 mm from the frontal view, another HU→μ model, Poisson
# noise), each registered from the nominal pose; success rate (mTRE < 2 mm over the label
# centroids), mTRE statistics, time per registration and DRRs/s inside the optimiser.
#
#   bash bench/register.sh [CASES] [extra register-study flags]       # CPU (this machine)
#   GPU=1 bash bench/register.sh 50                                   # wgpu renderer
#
# Per-case JSON lines go to $OUT/register-study.log, the summary to $OUT/register-study.json.
# On the H100 device machine (no Rust there): build here with
#   cargo build --release -p pinhole-bench --features gpu --bin register-study
#   strip target/release/register-study
# carry target/release/register-study, bench/device-debs, bench/device-data (CT and labels,
# see bench/gpu_device.sh for the Vulkan loader set-up), then run with BIN= and DATA= set:
#   BIN=target/release/register-study DATA=bench/device-data GPU=1 bash bench/register.sh 50
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-50}
shift || true
OUT=${OUT:-/tmp/pinhole-register-study}
DATA=${DATA:-../shared/data/chest-ct}
mkdir -p "$OUT"
FEATURES=()
FLAGS=()
if [ "${GPU:-0}" = 1 ]; then FEATURES=(--features gpu); FLAGS=(--gpu); fi
if [ -z "${BIN:-}" ]; then
  cargo build --release -p pinhole-bench "${FEATURES[@]}" --bin register-study
  BIN=target/release/register-study
fi
"$BIN" --ct "$DATA/ct.nii.gz" --labels "$DATA/labels.nii.gz" --cases "$CASES" \
  "${FLAGS[@]}" "$@" >"$OUT/register-study.json" 2> >(tee "$OUT/register-study.log" >&2)
cat "$OUT/register-study.json"
