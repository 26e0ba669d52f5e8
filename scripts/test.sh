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
ensure_componentize_py
ensure_wit_bindgen
ensure_browser
scripts/build-plugins.sh
# The container tests use the image; without a Docker engine they say they are skipped.
if docker info >/dev/null 2>&1; then
  scripts/image.sh wasmbatch:latest
  docker image inspect wasmbatch-rabbitmq:latest >/dev/null 2>&1 || scripts/rabbitmq-image.sh
else
  echo "no Docker engine is reachable: the container tests will be skipped" >&2
fi
cargo test --workspace "$@"
