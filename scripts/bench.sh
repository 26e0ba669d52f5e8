#!/usr/bin/env bash
# Builds what the benchmarks need (release binaries, the plugins, a virtualenv with
# FastAPI + uvicorn, RabbitMQ from Debian's package) and runs every benchmark, printing
# one table per comparison and then every goal with its figure.
# Usage: scripts/bench.sh [--quick] [http] [jobs] [operator] [native] [broker] [capabilities] [startup] [python]
#   (default: every section). --quick: small inputs, under two minutes once built; CI
#   runs it so that the harness keeps working. It prints the figures and never fails on
#   one (timings on a shared machine are not assertions).
# Environment: BENCH_SECONDS (per load run, default 3), BENCH_ROUNDS (default 3),
# BENCH_<SIZE> for any entry of SIZES in bench/run.py (e.g. BENCH_JOB_BATCHES, BENCH_DOCS),
# and BENCH_PROFILE: release (the default; the only figures worth reading) or dev (the
# debug binaries the test suite builds anyway: CI checks the harness with them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
ensure_rabbitmq
ensure_binaryen
ensure_componentize_py
scripts/build-plugins.sh >&2
case "${BENCH_PROFILE:-release}" in
  release) cargo build --release -p wasmbatch -p wasmbatch-bench >&2; profile_dir=release ;;
  dev)
    cargo build -p wasmbatch -p wasmbatch-bench >&2; profile_dir=debug
    echo "BENCH_PROFILE=dev: debug binaries; the figures check the harness, they measure nothing" >&2 ;;
  *) echo "BENCH_PROFILE must be release or dev, not ${BENCH_PROFILE}" >&2; exit 2 ;;
esac

venv="$HOME/.cache/wasmbatch/bench-venv"
python3 -c 'import ensurepip' 2>/dev/null || apt_install "venv, for the FastAPI baseline" python3-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import fastapi, uvicorn' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet fastapi uvicorn >&2
fi

export WASMBATCH_BIN="$CARGO_TARGET_DIR/$profile_dir/wasmbatch"
export BENCH_BIN="$CARGO_TARGET_DIR/$profile_dir/wasmbatch-bench"
export PLUGIN_DIR VENV_PYTHON="$venv/bin/python" OUT_DIR="$CARGO_TARGET_DIR/bench"
python3 bench/run.py "$@"
