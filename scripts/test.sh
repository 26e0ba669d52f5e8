#!/usr/bin/env bash
# The whole test suite: unit tests of every crate, then the end-to-end tests, which
# start the real binary and the real plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_wasm_target
ensure_c_toolchain
ensure_rabbitmq
ensure_moto
scripts/build-plugins.sh
cargo test --workspace "$@"
