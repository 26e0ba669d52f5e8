#!/usr/bin/env bash
# Fuzzes the job-file parser, the batch-body checks and module validation with
# cargo-fuzz (libFuzzer). Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [SANITIZER]
# (default 30 seconds, sanitizer "none"; "address" for AddressSanitizer).
# FUZZ_BUILD=dev builds the targets unoptimized: much faster to build, slower to run
# (CI's short run uses it; a real fuzzing session should not).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
seconds="${1:-30}"
sanitizer="${2:-none}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# One target directory per sanitizer: their builds use different flags.
build="${FUZZ_BUILD:-release}"
case "$build" in
  release) build_flag=() ;;
  dev) build_flag=(--dev) ;;
  *) echo "FUZZ_BUILD is release or dev, not $build" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz-$sanitizer"
mkdir -p "$CARGO_TARGET_DIR"
cd runtime
for target in job_file batch_body module_validation; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  echo "== fuzz $target for ${seconds}s (sanitizer: $sanitizer, $build build)"
  log="$CARGO_TARGET_DIR/fuzz-$target.log"
  status=0
  cargo fuzz run "${build_flag[@]}" --sanitizer "$sanitizer" "$target" "$corpus" fuzz/seeds/"$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 > "$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|thread|Failing input|artifact_prefix)" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed (exit $status); the input is under runtime/fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
