#!/usr/bin/env bash
# Build the local base image `backpack-base` (Debian bookworm + Python 3.11) without any
# container registry: debootstrap from Debian's package mirror, then `podman import`.
# Used by the tests and `make image` on machines with no registry access; skipped when
# the image exists already. Real deployments build on python:3.11-slim instead.
set -euo pipefail
IMAGE="${1:-backpack-base}"
PODMAN=(podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs)
if "${PODMAN[@]}" image exists "$IMAGE"; then
  exit 0
fi
ROOTFS="$(mktemp -d /var/tmp/backpack-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS" \
  http://deb.debian.org/debian >&2
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import - "$IMAGE" >&2
