# Sourced by the other scripts: one target directory outside the repository, so that
# builds are shared between checkouts and CI runs, and the wasm target installed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbatch/target}"
PLUGIN_DIR="$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip1/release"

ensure_wasm_target() {
  if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx wasm32-wasip1; then
      echo "installing the wasm32-wasip1 target" >&2
      rustup target add wasm32-wasip1
    fi
  fi
}

# Builds the plugins and the debug wasmbatch binary; sets BIN to the binary.
build_all() {
  ensure_wasm_target
  scripts/build-plugins.sh
  cargo build -p wasmbatch
  BIN="$CARGO_TARGET_DIR/debug/wasmbatch"
}
