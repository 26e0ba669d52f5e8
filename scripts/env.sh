# Sourced by the other scripts: one target directory outside the repository, so that
# builds are shared between checkouts and CI runs, and the wasm target installed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbatch/target}"
PLUGIN_DIR="$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip1/release"

ensure_wasm_target() {
  if command -v rustup >/dev/null 2>&1; then
    local target
    for target in wasm32-wasip1 wasm32-wasip2; do
      if ! rustup target list --installed | grep -qx "$target"; then
        echo "installing the $target target" >&2
        rustup target add "$target"
      fi
    done
  fi
}

# Builds the plugins and the debug wasmbatch binary; sets BIN to the binary.
build_all() {
  ensure_wasm_target
  scripts/build-plugins.sh
  cargo build -p wasmbatch
  BIN="$CARGO_TARGET_DIR/debug/wasmbatch"
}

# Installs Debian packages (as root, or through sudo): apt_install WHAT PACKAGE...
apt_install() {
  local what=$1 sudo=""
  shift
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing $what" >&2
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "the tests need $what ($*); install them" >&2
  fi
}

# The C guest of the test suite is compiled with clang for wasm32-wasi (wasi-libc);
# on Debian, installs them when they are missing (as root, or through sudo).
ensure_c_toolchain() {
  if command -v clang >/dev/null 2>&1 && echo '#include <stdio.h>' | clang --target=wasm32-wasi -E -x c - -o /dev/null 2>/dev/null; then
    return
  fi
  apt_install "clang, lld and wasi-libc for the C guest" clang lld wasi-libc libclang-rt-14-dev-wasm32
}

# RabbitMQ, for the broker tests (each test starts a node of its own on free ports, from
# the package's server script; the package's own service is not needed).
# `-p NAME` for every plugin crate under plugins/.
plugin_packages() {
  local manifest
  for manifest in plugins/*/Cargo.toml; do
    printf -- '-p %s ' "$(basename "$(dirname "$manifest")")"
  done
}

# binaryen's wasm-opt, which scripts/build-plugins.sh runs on the plugins.
ensure_binaryen() {
  command -v wasm-opt >/dev/null 2>&1 || apt_install "binaryen (wasm-opt) to optimize the plugins" binaryen
}

# Headless Chromium, its WebDriver and Selenium, for the dashboard's browser test.
ensure_browser() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    apt_install "Chromium and its driver for the dashboard test" chromium chromium-driver
  fi
  python3 -c "import selenium" >/dev/null 2>&1 || python3 -m pip install -q "selenium==4.51.0" >/dev/null
}

ensure_rabbitmq() {
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    return
  fi
  apt_install "RabbitMQ for the broker tests" rabbitmq-server
}

# moto, a local S3-protocol server, for the object storage tests (from PyPI; its boto3
# also uploads their fixtures).
ensure_moto() {
  if python3 -c "import moto.server, boto3" >/dev/null 2>&1; then
    return
  fi
  echo "installing moto[server] for the object storage tests" >&2
  python3 -m pip install -q "moto[server]" >/dev/null
}

# Waits (up to 60 s) until the process PID logs `listening` (JSON logs in LOG) and
# prints the address it listens on; exits with its log if it dies first.
wait_listening() {
  local log=$1 pid=$2 addr=""
  for _ in $(seq 1 600); do
    addr=$(python3 - "$log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "listening":
        print(event["addr"])
        break
PY
)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "the server did not start within 60 s" >&2
  exit 1
}

# wit-bindgen's command-line generator (crates.io), pinned to the release whose
# wit-parser wasmtime 48 uses: the C bindings of examples/c-component/ (its test builds
# it). Installed under ~/.cache/wasmbatch/tools, which is put on PATH.
WIT_BINDGEN_VERSION=0.60.0
WASMBATCH_TOOLS="$HOME/.cache/wasmbatch/tools"
export PATH="$WASMBATCH_TOOLS/bin:$PATH"
ensure_wit_bindgen() {
  if [ "$(wit-bindgen --version 2>/dev/null | awk '{print $2}')" = "$WIT_BINDGEN_VERSION" ]; then
    return
  fi
  echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION for the C component example" >&2
  cargo install -q --locked wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --root "$WASMBATCH_TOOLS"
}

# componentize-py (PyPI), pinned: what `wasmbatch build` runs to make a component of a
# Python handler.
COMPONENTIZE_PY_VERSION=0.25.1
ensure_componentize_py() {
  if [ "$(componentize-py --version 2>/dev/null | awk '{print $2}')" = "$COMPONENTIZE_PY_VERSION" ]; then
    return
  fi
  echo "installing componentize-py $COMPONENTIZE_PY_VERSION for Python handlers" >&2
  python3 -m pip install -q "componentize-py==$COMPONENTIZE_PY_VERSION" >/dev/null
}
