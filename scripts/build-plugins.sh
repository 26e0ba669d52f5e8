#!/usr/bin/env bash
# Builds every plugin in plugins/ for wasm32-wasip1 (release). The .wasm files land in
# $CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip1/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
cargo build --release --target wasm32-wasip1 --target-dir "$CARGO_TARGET_DIR/wasm-plugins" $(plugin_packages)
echo "plugins: $PLUGIN_DIR" >&2
