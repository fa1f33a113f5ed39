#!/usr/bin/env bash
# Build the plugin bundle (plugin/config.json + plugin/rootfs) from ./Dockerfile, for builders
# who can pull a base image from a container registry. Without a registry use ./rootfs.build.sh.
#
# Usage:  scripts/build-with-docker.sh        (from any directory)
# Env:    BASE_IMAGE=IMG   Node 24 bookworm image (default node:24-bookworm-slim)
#         IMAGE=NAME       tag of the built image (default ossnas-rootfs)
#         OUT=DIR          output bundle (default: <repo>/plugin)
# Then:   docker plugin create ossnas plugin
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
BASE_IMAGE=${BASE_IMAGE:-node:24-bookworm-slim}
IMAGE=${IMAGE:-ossnas-rootfs}
OUT=${OUT:-$REPO/plugin}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
OUT=${OUT%/}

log() { printf '[build-with-docker] %s\n' "$*" >&2; }

log "docker build (BASE_IMAGE=$BASE_IMAGE) -> $IMAGE"
docker build --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" "$REPO"

# A created, never started, container gives the image's filesystem as one flat tree.
CID=$(docker create "$IMAGE")
NEW=$OUT.tmp
cleanup() {
  docker rm -f "$CID" >/dev/null 2>&1 || true
  rm -rf --one-file-system -- "$NEW"
}
trap cleanup EXIT

rm -rf --one-file-system -- "$NEW"
mkdir -p "$NEW/rootfs"
# --numeric-owner: keep the image's uids/gids; mapping by name through the host's
# /etc/passwd would give files of users like "node" whatever uid the host has for that name.
docker export "$CID" | tar -x --numeric-owner -C "$NEW/rootfs"
cp "$REPO/config.json" "$NEW/config.json"

# Swap in: the previous bundle is only deleted once the new one is in place.
rm -rf --one-file-system -- "$OUT.old"
if [[ -e $OUT ]]; then mv -T -- "$OUT" "$OUT.old"; fi
mv -T -- "$NEW" "$OUT"
rm -rf --one-file-system -- "$OUT.old"
log "rootfs size: $(du -sh "$OUT/rootfs" | cut -f1)"
log "bundle ready: $OUT   ->   docker plugin create ossnas $OUT"
