#!/usr/bin/env bash
# A base image the project's images build FROM, made from Debian's packages with debootstrap (for machines that
# reach Debian's mirror but no container registry): Debian SUITE (bookworm) minbase + ca-certificates, imported as
# IMAGE (default clip-embedder/debian:SUITE). Elsewhere `debian:SUITE-slim` from Docker Hub is the same. The app
# images use bookworm (Python 3.11); the database uses trixie (postgresql-17-pgvector; bookworm has no pgvector).
# Needs root, debootstrap and a running Docker engine. Skips the work when the image exists (FORCE=1 rebuilds).
set -euo pipefail
SUITE=${1:-bookworm}
IMAGE=${2:-clip-embedder/debian:$SUITE}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "${FORCE:-0}" != "1" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
root=$(mktemp -d /tmp/clip-embedder-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' - "$IMAGE" >/dev/null
rm -f "$root.log"
echo "base image $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
