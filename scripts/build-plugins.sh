#!/usr/bin/env bash
# Builds every plugin in plugins/ for wasm32-wasip1 (release), then optimizes each with
# binaryen's `wasm-opt -O3 -g` (function names kept, for traps and profiles): measured
# 10–20 % faster guests (docs/benchmarks.md). The .wasm files land in
# $CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip1/release/. Without wasm-opt (Debian:
# binaryen) the plugins are left as cargo built them, and the script says so.
# Then the same sources for wasm32-wasip2: components of the world wasmbatch:handler,
# in …/wasm32-wasip2/release/ (wasm-opt does not read components).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
cargo build --release --target wasm32-wasip1 --target-dir "$CARGO_TARGET_DIR/wasm-plugins" $(plugin_packages)
if command -v wasm-opt >/dev/null 2>&1; then
  # Optimized files are kept by the hash of what cargo built (cargo puts its own file
  # back on every build), so an unchanged plugin is optimized once.
  cache="$CARGO_TARGET_DIR/wasm-opt"
  mkdir -p "$cache"
  for manifest in plugins/*/Cargo.toml; do
    wasm="$PLUGIN_DIR/$(basename "$(dirname "$manifest")").wasm"
    hash=$(sha256sum < "$wasm" | cut -c1-64)
    if [ ! -f "$cache/$hash.wasm" ] && ! grep -qx "$hash" "$cache/optimized" 2>/dev/null; then
      wasm-opt -O3 -g "$wasm" -o "$cache/$hash.tmp"
      mv "$cache/$hash.tmp" "$cache/$hash.wasm"
      sha256sum < "$cache/$hash.wasm" | cut -c1-64 >> "$cache/optimized"
    fi
    # A new file, not the one cargo hard-links into deps/: cargo's copy stays its own.
    if [ -f "$cache/$hash.wasm" ]; then
      cp "$cache/$hash.wasm" "$wasm.tmp" && mv "$wasm.tmp" "$wasm"
    fi
  done
else
  echo "wasm-opt not found: plugins left unoptimized (install binaryen for 10–20 % faster guests)" >&2
fi
cargo build --release --target wasm32-wasip2 --target-dir "$CARGO_TARGET_DIR/wasm-plugins" $(plugin_packages)
echo "plugins: $PLUGIN_DIR (components: $CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip2/release)" >&2
