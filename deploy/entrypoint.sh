#!/bin/sh
# The image's entrypoint: refuse root, turn BACKPACK_*_FILE secrets into settings, run backpack.
#
# Secrets (the secret key, a database URL) arrive as files, Docker/Swarm secrets or
# bind mounts, so that they never show in `docker inspect`: BACKPACK_SECRET_KEY_FILE=/run/…
# makes BACKPACK_SECRET_KEY the file's content, for this process only.
set -eu
if [ "$(id -u)" = "0" ]; then
  echo "backpack: refusing to run as root; run the image as its own user (10001) or another non-root user." >&2
  exit 78
fi
for variable in $(env | sed -n 's/^\(BACKPACK_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
  eval "path=\${${variable}_FILE}"
  if [ ! -r "$path" ]; then
    echo "backpack: ${variable}_FILE names $path, which cannot be read." >&2
    exit 78
  fi
  value="$(cat "$path")"
  export "$variable=$value"
  unset "${variable}_FILE"
done
exec /opt/backpack/bin/backpack "$@"
