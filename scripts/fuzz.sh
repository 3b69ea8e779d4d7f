#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time, starting from its seed
# corpus fuzz/corpus/<target>; fails when any target finds a crash, a panic, a timeout
# or an out-of-memory. Prints executions and coverage per target. See FUZZING.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, every target)
#
# Works on the stable toolchain: cargo-fuzz's instrumentation flags are stable; only
# AddressSanitizer (-Zsanitizer) is not, so the build sets RUSTC_BOOTSTRAP=1 for it.
# Environment:
#   FUZZ_SEED=N                   (libFuzzer -seed; CI sets 1 so that every run tries the
#                                  same inputs; unset: a random seed per run)
#   FUZZ_RUNS=N                   (libFuzzer -runs: stop each target after N inputs; with
#                                  FUZZ_SEED the run is the same every time)
#   FUZZ_SKIP="t1 t2"              targets not run (open findings; printed as NOT RUN)
#   FUZZ_SANITIZER=none|address   (default none, what CI runs; address is AddressSanitizer,
#                                  built with RUSTC_BOOTSTRAP=1 on stable, ~1.7x the build)
#   FUZZ_PARALLEL=N               targets run at once (default: number of CPUs, at most 2)
#   FUZZ_TOOLCHAIN=stable         the rustup toolchain (default: the active one)
#   FUZZ_NO_INSTALL=1             do not install cargo-fuzz when missing: skip, exit 0
#   FUZZ_RUN_CORPUS=DIR           where the grown corpora go (default fuzz/corpus-run)
# The corpus a run grows goes to fuzz/corpus-run/<target> (ignored by git, reused by
# the next run); the seeds in fuzz/corpus/<target> are only read. Findings are written
# to fuzz/artifacts/<target>/, logs to fuzz/target/<plain|address>/fuzz-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
case "$seconds" in '' | *[!0-9]*) echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

CARGO_FUZZ_VERSION=0.13.2
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then toolchain=("+$FUZZ_TOOLCHAIN"); fi
cpus=$(nproc 2>/dev/null || echo 2)
parallel=${FUZZ_PARALLEL:-$((cpus < 2 ? cpus : 2))}

if ! cargo "${toolchain[@]}" fuzz --version >/dev/null 2>&1; then
  if [ -n "${FUZZ_NO_INSTALL:-}" ]; then
    echo "fuzz.sh: cargo-fuzz is not installed and FUZZ_NO_INSTALL is set: fuzzing SKIPPED" >&2
    exit 0
  fi
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  start=$SECONDS
  cargo "${toolchain[@]}" install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
  echo "   installed in $((SECONDS - start)) s"
fi

# The fuzz workspace's Cargo.lock is the truth (cargo fuzz build has no --locked).
cargo "${toolchain[@]}" metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null

# Release with debug assertions and overflow checks, 16 codegen units (cargo-fuzz's
# default of 1 makes the cold build much slower for a few per cent of speed), one
# target folder per sanitizer so that switching does not rebuild everything.
target_dir=fuzz/target/$([ "$sanitizer" = none ] && echo plain || echo "$sanitizer")
build_flags=(-O --debug-assertions --codegen-units 16 --sanitizer "$sanitizer" --target-dir "$target_dir")
bootstrap=()
if [ "$sanitizer" != none ]; then bootstrap=(env RUSTC_BOOTSTRAP=1); fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi
# FUZZ_SKIP="a b": targets left out, each named on the terminal (open findings, FUZZING.md).
for skip in ${FUZZ_SKIP:-}; do
  echo "== NOT RUN: $skip (FUZZ_SKIP; an open finding, see FUZZING.md)"
  for i in "${!targets[@]}"; do [ "${targets[$i]}" = "$skip" ] && unset 'targets[i]'; done
done
targets=("${targets[@]}")

echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
"${bootstrap[@]}" cargo "${toolchain[@]}" fuzz build "${build_flags[@]}"
echo "   built in $((SECONDS - start)) s"

triple=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release
log_dir=$target_dir/fuzz-logs
run_root=${FUZZ_RUN_CORPUS:-fuzz/corpus-run}
mkdir -p "$log_dir"

# Largest input per target: big enough for deeply nested DICOM sequences and JSON,
# small elsewhere so that mutations stay fast.
max_len() {
  case "$1" in
    dicom_file | dicom_deidentify | dicom_seg_input | dicom_series | xray_image | nifti | nrrd | nrrd_detached | plan_json | markups) echo 1048576 ;;
    igtl_decode | igtl_stream | igtl_server_frames) echo 262144 ;;
    *) echo 65536 ;;
  esac
}

run_one() {
  local target=$1
  local run_corpus=$run_root/$target seeds=fuzz/corpus/$target
  mkdir -p "$run_corpus" "fuzz/artifacts/$target"
  [ -d "$seeds" ] || seeds=
  # New inputs go to the first folder (run_corpus); the seeds are only read.
  "$bin_dir/$target" "$run_corpus" ${seeds:+"$seeds"} \
    -max_total_time="$seconds" -max_len="$(max_len "$target")" ${FUZZ_SEED:+-seed="$FUZZ_SEED"} ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
    >"$log_dir/$target.log" 2>&1
}

summary() {
  local target=$1 status=$2 log=$log_dir/$1.log
  local runs speed cov ft corp rss
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  # The last status line: "#N  DONE  cov: C ft: F corp: K/S ...".
  local last
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  printf '%-18s %-6s %12s %10s %7s %7s %7s %8s\n' "$target" "$status" "${runs:--}" "${speed:--}" \
    "${cov:--}" "${ft:--}" "${corp:--}" "${rss:--}"
}

echo "== fuzzing ${#targets[@]} targets for $seconds s each, $parallel at a time (logs in $log_dir)"
start=$SECONDS
declare -A pid_of=()
declare -A status_of=()
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  run_one "$target" &
  pid_of[$target]=$!
done
failed=()
for target in "${targets[@]}"; do
  if wait "${pid_of[$target]}"; then
    status_of[$target]=ok
  else
    status_of[$target]=FAIL
    failed+=("$target")
  fi
done
echo "   fuzzed in $((SECONDS - start)) s"

# The targets' scratch folders (named after their process id) of processes that ended.
for dir in /dev/shm/pinhole-fuzz-* "${TMPDIR:-/tmp}"/pinhole-fuzz-*; do
  [ -d "$dir" ] || continue
  kill -0 "${dir##*-}" 2>/dev/null || rm -rf "$dir"
done

printf '%-18s %-6s %12s %10s %7s %7s %7s %8s\n' target result executions exec/s cov ft corpus rss_mb
for target in "${targets[@]}"; do summary "$target" "${status_of[$target]}"; done

if [ ${#failed[@]} -gt 0 ]; then
  for target in "${failed[@]}"; do
    echo "---- $target: last lines of $log_dir/$target.log" >&2
    tail -40 "$log_dir/$target.log" >&2
    echo "---- reproducer(s) in fuzz/artifacts/$target/:" >&2
    ls -1 "fuzz/artifacts/$target/" >&2 || true
  done
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  echo "  reproduce: ${bootstrap[*]} cargo fuzz run ${build_flags[*]} <target> fuzz/artifacts/<target>/<file>" >&2
  exit 1
fi
echo "fuzz.sh: no findings"
