#!/usr/bin/env bash
# GPU DRR benchmark on the device machine (H100; no Rust there). Run from the repo root.
#
# Prepare here (once), then carry the three paths:
#   cargo build --release -p pinhole-bench --bin drr-gpu-bench
#   strip target/release/drr-gpu-bench   # 56 MB with line tables → ~15 MB (64 MiB carry limit)
#   mkdir -p bench/device-debs bench/device-data
#   (cd bench/device-debs && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#   cp ../shared/data/chest-ct/ct.nii.gz bench/device-data/ct.nii.gz
# Device command (carry: target/release/drr-gpu-bench, bench/device-debs, bench/device-data):
#   bash bench/gpu_device.sh [CT] [extra drr-gpu-bench flags]
# Writes gpu_bench.json, gpu_bench.log, env.txt under $OUT (default /tmp/pinhole-gpu-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pinhole-gpu-bench}
mkdir -p "$OUT"
CT=${1:-bench/device-data/ct.nii.gz}
shift || true
BIN=target/release/drr-gpu-bench
[ -x "$BIN" ] || { echo "missing $BIN (build it here and carry it)" >&2; exit 2; }
[ -f "$CT" ] || { echo "missing CT $CT (carry bench/device-data)" >&2; exit 2; }

# The Vulkan loader is not installed on the device machine: unpack the carried .debs.
# The NVIDIA ICD also needs the GLVND/EGL loaders, so unpack every carried .deb.
if ! ldconfig -p | grep -q 'libGLX\.so\.0'; then
  shopt -s nullglob
  debs=(bench/device-debs/*.deb)
  [ ${#debs[@]} -gt 0 ] || { echo "no Vulkan/GLVND loaders and no bench/device-debs/*.deb" >&2; exit 2; }
  for f in "${debs[@]}"; do dpkg -x "$f" /; done
  ldconfig
fi
# The NVIDIA ICD lives at the driver's own path.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -z "${VK_ICD_FILENAMES:-}" ]; then
  # The driver's own folder first: the copy under /usr/share did not load (2026-11-27, H100).
  for d in /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d \
           /usr/local/share/vulkan/icd.d; do
    if [ -f "$d/nvidia_icd.json" ]; then export VK_DRIVER_FILES="$d/nvidia_icd.json"; break; fi
  done
fi
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR=$(mktemp -d)
  export XDG_RUNTIME_DIR
fi
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-} WGPU_BACKEND=$WGPU_BACKEND"
  ldconfig -p | grep libvulkan || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

"$BIN" --ct "$CT" "$@" >"$OUT/gpu_bench.json" 2> >(tee "$OUT/gpu_bench.log" >&2)
cat "$OUT/gpu_bench.json"
