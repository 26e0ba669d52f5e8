#!/usr/bin/env bash
# Builds the container image `wasmbatch` (or the tag given): a static wasmbatch
# (x86_64-unknown-linux-musl), CA certificates and a non-root user (10001), FROM
# scratch. Usage: scripts/image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
TAG=${1:-wasmbatch:latest}
TARGET=x86_64-unknown-linux-musl

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
command -v musl-gcc >/dev/null || apt_install "musl-tools for the static build" musl-tools
[ -f /etc/ssl/certs/ca-certificates.crt ] || apt_install "CA certificates" ca-certificates

echo "building the static binary ($TARGET, release)" >&2
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target "$TARGET" -p wasmbatch >&2
BIN="$CARGO_TARGET_DIR/$TARGET/release/wasmbatch"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/writable/home/wasmbatch/.cache/wasmbatch" "$ctx/writable/data" \
  "$ctx/writable/mnt" "$ctx/writable/plugins" "$ctx/rootfs/cortex/spec" "$ctx/rootfs/tmp"
# /tmp as on any system (root's, 1777): Docker gives a `--tmpfs /tmp` the mode of the
# image's directory, so a plain tmpfs is writable by the non-root user on a read-only root.
chmod 1777 "$ctx/rootfs/tmp"
cp "$BIN" "$ctx/rootfs/wasmbatch"
strip "$ctx/rootfs/wasmbatch" 2>/dev/null || true
cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nwasmbatch:x:10001:10001:wasmbatch:/home/wasmbatch:/sbin/nologin\n' \
  > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nwasmbatch:x:10001:\n' > "$ctx/rootfs/etc/group"
cp image/Dockerfile "$ctx/"
docker build -q -t "$TAG" "$ctx" >&2
docker image inspect "$TAG" --format '{{.Size}}' | awk -v t="$TAG" '{printf "%s: %.1f MB\n", t, $1/1e6}'
