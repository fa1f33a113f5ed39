#!/usr/bin/env bash
# Builds the plugin and pushes one release of it:
#
#   scripts/release.sh VERSION REGISTRY/REPO      e.g. scripts/release.sh 0.2.0 registry.example.com/ops/ossnas
#
# pushes REPO:VERSION, REPO:<arch>-VERSION (amd64 or arm64, this machine's) and REPO:latest, all
# the same plugin (one digest), and prints each reference with its digest.
#
# Refuses: a VERSION that is not semantic (X.Y.Z, optionally -pre), a VERSION that package.json
# does not carry (the release is what the tree says it is), uncommitted changes (a release must be
# a commit), and a VERSION the registry already has (a release is never pushed over).
#
# Env: BUNDLE=DIR  push an already built bundle (config.json + rootfs/) instead of building one.
#      Any of rootfs.build.sh's settings (NODE_VERSION, DEBIAN_MIRROR) pass through to it.
# `docker login REGISTRY` first when the registry needs it. Needs root (docker plugin create).
set -euo pipefail

die() { echo "release: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: scripts/release.sh VERSION REGISTRY/REPO (e.g. 0.2.0 registry.example.com/ops/ossnas)"
version=$1
repo=$2
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "VERSION must be semantic (X.Y.Z or X.Y.Z-pre), got '$version'"
[[ $repo =~ ^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+$ ]] || die "REPO must be REGISTRY/PATH (e.g. registry.example.com/ops/ossnas), got '$repo'"

top=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$top"
[ -z "$(git status --porcelain)" ] || die "the working tree has uncommitted changes; a release is a commit"
declared=$(node -p "require('./package.json').version")
[ "$declared" = "$version" ] || die "package.json says version $declared, not $version: bump it (and CHANGELOG.md) in a commit first"

case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac
registry=${repo%%/*}
path=${repo#*/}

# The registry's answer for a tag: 200 (exists), 404 (free), or what it said. Registries that
# need a login answer 401 here: then `docker plugin push` below is what checks, and a tag that
# exists is found by the digest lookup at the end.
manifest_status() {
  local scheme=https
  case $registry in 127.*|localhost|localhost:*) scheme=http ;; esac
  curl -s -o /dev/null -w '%{http_code}' -I \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "$scheme://$registry/v2/$path/manifests/$1" || echo unreachable
}
digest_of() {
  local scheme=https
  case $registry in 127.*|localhost|localhost:*) scheme=http ;; esac
  curl -fsSI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "$scheme://$registry/v2/$path/manifests/$1" 2>/dev/null | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'
}

for tag in "$version" "$arch-$version"; do
  status=$(manifest_status "$tag")
  [ "$status" != 200 ] || die "$repo:$tag exists already; a release is never pushed over (bump the version)"
done

bundle=${BUNDLE:-}
if [ -z "$bundle" ]; then
  bundle=$top/.cache/release-$version
  OUT=$bundle bash "$top/rootfs.build.sh"
fi
[ -f "$bundle/config.json" ] && [ -d "$bundle/rootfs" ] || die "$bundle is not a plugin bundle (config.json + rootfs/)"

# One plugin under three names. An engine refuses to create a plugin from a rootfs layer it
# already holds for another, so each name is created, pushed and removed before the next.
for tag in "$version" "$arch-$version" latest; do
  ref=$repo:$tag
  docker plugin rm -f "$ref" >/dev/null 2>&1 || true
  docker plugin create "$ref" "$bundle" >/dev/null
  docker plugin push "$ref" >/dev/null
  docker plugin rm "$ref" >/dev/null
  echo "$ref $(digest_of "$tag")"
done
