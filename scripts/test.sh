#!/usr/bin/env bash
# The whole test suite (README's second command runs .ci/run, which ends here).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
