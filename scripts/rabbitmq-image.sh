#!/usr/bin/env bash
# Builds `wasmbatch-rabbitmq:latest` (or the tag given): RabbitMQ from Debian's package
# on a Debian base made here with debootstrap (no registry is needed), for the
# container tests and deploy/compose.yaml. Listens on 5672; the `guest` user may
# connect from other containers. Usage: scripts/rabbitmq-image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
TAG=${1:-wasmbatch-rabbitmq:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || apt_install "debootstrap for the RabbitMQ image" debootstrap

root=$(mktemp -d)
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
echo "debootstrap bookworm (minbase) into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
# No service starts inside the build.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
mkdir -p "$root/etc/rabbitmq"
printf 'loopback_users = none\nlisteners.tcp.default = 5672\n' > "$root/etc/rabbitmq/rabbitmq.conf"
tar -C "$root" -c . | docker import \
  -c 'ENV HOME=/var/lib/rabbitmq' \
  -c 'USER rabbitmq' \
  -c 'EXPOSE 5672' \
  -c 'CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]' \
  - "$TAG" >/dev/null
docker image inspect "$TAG" --format '{{.Size}}' | awk -v t="$TAG" '{printf "%s: %.0f MB\n", t, $1/1e6}'
