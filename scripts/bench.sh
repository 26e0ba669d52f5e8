#!/usr/bin/env bash
# Builds what the benchmarks need (release binaries, the plugins, a virtualenv with
# FastAPI + uvicorn) and runs every benchmark, printing one table per comparison.
# Usage: scripts/bench.sh [http] [jobs] [operator] [native] [startup]   (default: all)
# Environment: BENCH_SECONDS (per load run, default 3), BENCH_ROUNDS (default 3),
# BENCH_JOB_BATCHES, BENCH_DOCS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
scripts/build-plugins.sh >&2
cargo build --release -p wasmbatch -p wasmbatch-bench >&2

venv="$HOME/.cache/wasmbatch/bench-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import fastapi, uvicorn' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet fastapi uvicorn >&2
fi

export WASMBATCH_BIN="$CARGO_TARGET_DIR/release/wasmbatch"
export BENCH_BIN="$CARGO_TARGET_DIR/release/wasmbatch-bench"
export PLUGIN_DIR VENV_PYTHON="$venv/bin/python" OUT_DIR="$CARGO_TARGET_DIR/bench"
python3 bench/run.py "$@"
