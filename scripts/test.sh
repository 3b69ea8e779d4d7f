#!/usr/bin/env bash
# The whole test suite (README's second command runs .ci/run, which ends here).
# Report snapshots (crates/*/tests/snapshots) are checked by cargo-insta, which also
# refuses snapshot files that no test uses; without cargo-insta, plain cargo test runs
# the same tests (snapshots still compared) and says what it skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo insta --version >/dev/null 2>&1; then
  cargo test --workspace --locked --no-run   # Cargo.lock is the truth (insta has no --locked)
  cargo insta test --workspace --unreferenced reject --check
else
  echo "note: cargo-insta not installed (cargo install cargo-insta --locked); unreferenced snapshots are not checked" >&2
  cargo test --workspace --locked
fi
# The Python package (maturin wheel + pytest, tests/python).
bash scripts/python-tests.sh
