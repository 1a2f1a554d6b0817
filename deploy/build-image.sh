#!/usr/bin/env bash
# `make image`: build Backpack's image with podman, with no registry and no network in the
# build. The base is `backpack-base` (deploy/base-image.sh, Debian bookworm + Python 3.11)
# unless BACKPACK_BASE_IMAGE names another; the project and its dependencies go in as
# wheels from `pip wheel` (deploy/wheels/), built by this checkout's Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${1:-backpack:dev}"
BASE="${BACKPACK_BASE_IMAGE:-backpack-base}"
PYTHON="${PYTHON:-.venv/bin/python}"
if [ "$BASE" = "backpack-base" ]; then
  deploy/base-image.sh "$BASE"
  BASE="localhost/backpack-base"
fi
rm -f deploy/wheels/*.whl
"$PYTHON" -m pip wheel -q --wheel-dir deploy/wheels '.[postgres,redis,s3,docker]' \
  'async-timeout>=4.0.3' >&2  # redis needs it on Debian's Python 3.11.2, not on newer ones
deploy/podman.sh build -q --layers=false --format docker --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
  --build-arg "BASE=$BASE" -f deploy/Dockerfile -t "$IMAGE" .
