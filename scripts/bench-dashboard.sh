#!/usr/bin/env bash
# The operator's throughput with the dashboard open on a running job, against the same
# job with no page: a job of 1,000,000 one-item noop batches (release build), rounds
# alternating which goes first; prints each run and the median ratio.
# Usage: scripts/bench-dashboard.sh [BATCHES] [ROUNDS]   (default 1000000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
ensure_browser
scripts/build-plugins.sh >&2
cargo build --release -p wasmbatch >&2
python3 tests/browser/throughput.py "$CARGO_TARGET_DIR/release/wasmbatch" "$PLUGIN_DIR/noop.wasm" "${1:-1000000}" "${2:-3}"
