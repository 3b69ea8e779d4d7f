#!/usr/bin/env bash
# The Python package's tests (issue 22): builds the abi3 wheel from this repository with
# maturin (dev profile: shares the Rust test build's artefacts), installs it into a
# virtual environment that sees the reference peers of tests/py/requirements.txt, and
# runs pytest on tests/python against the CLI binary and the shared data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PINHOLE_PYTHON:-python3}
VENV=target/python-venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
rm -rf target/wheels
"$PY" -m maturin build --quiet --locked --profile dev \
  -m crates/python/Cargo.toml -o target/wheels
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
  --no-deps target/wheels/pinhole-*.whl
cargo build --quiet --locked -p pinhole   # the CLI the tests compare against
ROOT=$PWD
# Run outside the source tree so that `import pinhole` is the installed wheel.
cd tests/python
PINHOLE_BIN="$ROOT/target/debug/pinhole" PINHOLE_PYTHON="$ROOT/$VENV/bin/python" \
  PATH="$ROOT/$VENV/bin:$PATH" "$ROOT/$VENV/bin/python" -m pytest -q -p no:cacheprovider .
