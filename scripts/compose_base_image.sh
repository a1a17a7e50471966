#!/usr/bin/env bash
# The base image every project image builds FROM, made from Debian's packages with debootstrap (for machines that
# reach Debian's mirror but no container registry): Debian bookworm minbase + ca-certificates, imported as
# BASE_IMAGE (default clip-embedder/debian:bookworm). Elsewhere `debian:bookworm-slim` from Docker Hub is the same.
# Needs root, debootstrap and a running Docker engine. Skips the work when the image exists (FORCE=1 rebuilds).
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-clip-embedder/debian:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "${FORCE:-0}" != "1" ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
root=$(mktemp -d /tmp/clip-embedder-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
rm -f "$root.log"
echo "base image $BASE_IMAGE: $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
