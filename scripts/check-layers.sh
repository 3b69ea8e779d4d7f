#!/usr/bin/env bash
# Fails when a core or planner crate pulls in the GPU, async or web stacks.
# See ARCHITECTURE.md: wgpu belongs to crates/gpu (and the `gpu` features that reach it),
# tokio/axum/hyper to crates/server only.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(wgpu|wgpu-core|wgpu-hal|tokio|axum|hyper) '
members=$(cargo metadata --format-version 1 --no-deps | python3 -c \
  'import json,sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))')
status=0
# pinhole-pipeline is checked without its `gpu` feature: wgpu only when a binary asks.
for crate in pinhole-volume pinhole-io pinhole-plan-needle pinhole-vessel pinhole-ablation pinhole-xray pinhole-igtl pinhole-register pinhole-guidance pinhole-ultrasound pinhole-intraop pinhole-dicomnet pinhole-pipeline; do
  grep -qx "$crate" <<<"$members" || continue  # not in the workspace yet
  tree=$(cargo tree -p "$crate" --edges normal --prefix none)
  hits=$(grep -E "$forbidden" <<<"$tree" | sort -u || true)
  if [ -n "$hits" ]; then
    echo "layering violation: $crate depends on:"; echo "$hits"; status=1
  else
    echo "ok: $crate ($(wc -l <<<"$tree") dependency lines checked)"
  fi
done
# The Python bindings are an app like the CLI (wgpu through the pipeline's `gpu`
# feature), but the async server stack stays out of them.
tree=$(cargo tree -p pinhole-python --edges normal --prefix none)
hits=$(grep -E '^(tokio|axum|hyper) ' <<<"$tree" | sort -u || true)
if [ -n "$hits" ]; then
  echo "layering violation: pinhole-python depends on:"; echo "$hits"; status=1
else
  echo "ok: pinhole-python (no tokio/axum/hyper)"
fi
exit $status
