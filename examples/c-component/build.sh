#!/usr/bin/env bash
# Builds the C handler of this folder into a component of the world
# `wasmbatch:handler`. Usage: examples/c-component/build.sh [OUT_DIR] (default: ./out).
#
# Needs wit-bindgen's command-line generator (`cargo install wit-bindgen-cli --version
# 0.60.0`), clang with lld and wasi-libc (Debian: clang lld wasi-libc
# libclang-rt-14-dev-wasm32), and wasmbatch (WASMBATCH, else the one on PATH).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
world="$here/../../guest-sdk/wit"
out="${1:-$here/out}"
mkdir -p "$out/bindings"

# 1. The world's C bindings: handler.h, handler.c, handler_component_type.o (the world,
#    for the linker to put in the module).
wit-bindgen c "$world" --world handler --out-dir "$out/bindings" >/dev/null

# 2. A WASI preview 1 reactor module: the handler, its bindings, wasi-libc.
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
  -I "$out/bindings" -o "$out/sum_core.wasm" \
  "$here/sum.c" "$out/bindings/handler.c" "$out/bindings/handler_component_type.o"

# 3. The component: WASI preview 1 adapted to preview 2 (`--plugin sum_core.wasm` does
#    this step itself; a component file runs on any host of the world).
"${WASMBATCH:-wasmbatch}" build "$out/sum_core.wasm" -o "$out/sum.wasm"
