#!/usr/bin/env bash
# Build the managed-plugin bundle that `docker plugin create ossnas plugin` takes:
#
#   $OUT/config.json   copy of the repo's config.json
#   $OUT/rootfs/       Debian 12 minbase + s3fs, rclone, fuse3, util-linux, tini, ca-certificates,
#                      the official Node binary at /usr/local/bin/node, and the app at /app
#
# Why not a Dockerfile: the machines this project is built on reach Debian's apt mirror and
# the npm registry, but no container registry, so there is no base image to pull. debootstrap
# gives the same Debian userland, and the npm registry carries the official Node binary
# (package node-linux-<arch>). Builders who do have a registry can use ./Dockerfile via
# scripts/build-with-docker.sh instead.
#
# The slow part (debootstrap + apt, about a minute) is cached under .cache/rootfs-base-<key>/,
# so a rebuild after an app change only copies that tree and the app (seconds).
#
# Usage:  sudo ./rootfs.build.sh            (from any directory)
# Env:    OUT=DIR             output bundle (default: <repo>/plugin)
#         NODE_VERSION=X.Y.Z  Node put into the rootfs (default: the version in .node-version)
#         DEBIAN_MIRROR=URL   override the mirror otherwise read from apt's configuration
#         OSSFS_DEB=FILE      also install this ossfs package (Alibaba's .deb for Debian 12, with
#                             its dependencies from the mirror); the plugin then mounts OSS
#                             volumes with ossfs instead of s3fs
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)   # the script lives at the repo top
SUITE=bookworm
# Packages the plugin runs: s3fs and rclone (OSS/S3 via FUSE: the volume option client=),
# fuse3 (fusermount3: unmounting, and rclone's mount), util-linux (mount, umount, nsenter),
# tini (PID 1: reaps s3fs' double-forked children), ca-certificates (https endpoints).
PACKAGES=(s3fs rclone fuse3 util-linux e2fsprogs xfsprogs tini ca-certificates)
# Bump when the way the base is built changes (shrink rules, extra files...): it changes the
# cache key, so every builder gets a fresh base instead of a stale cached one.
BASE_RECIPE_VERSION=1

OUT=${OUT:-$REPO/plugin}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac      # relative OUT is relative to the caller's cwd
OUT=${OUT%/}
CACHE=$REPO/.cache                                # git-ignored

# Plain C locale for every tool we run (and nothing inherited into the chroot).
export LC_ALL=C.UTF-8
CHROOT_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
            DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
log() { printf '[rootfs.build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { date +%s%3N; }
SCRIPT_T0=$(now_ms)
PHASE_NAME='' PHASE_T0=0
TIMES=()
# phase NAME: close the running phase (print its time) and start the next one.
phase() {
  local t; t=$(now_ms)
  if [[ -n $PHASE_NAME ]]; then
    local line; line=$(printf '%-32s %6.1f s' "$PHASE_NAME" "$(( t - PHASE_T0 ))e-3")
    TIMES+=("$line"); log "done: $line"
  fi
  PHASE_NAME=$1 PHASE_T0=$t
  [[ -n $1 ]] && log "phase: $1"
  return 0
}

# umount_under, rm_tree, debian_mirror
# shellcheck source=scripts/lib/debian-tree.sh
source "$REPO/scripts/lib/debian-tree.sh"
# node_version, node_package, fetch_node
# shellcheck source=scripts/lib/node.sh
source "$REPO/scripts/lib/node.sh"
NODE_VERSION=${NODE_VERSION:-$(node_version)}

# Temporary directories to remove however the script ends.
TMP_DIRS=()
cleanup() {
  local d
  # A background npm still writing into the staging dir would race the rm below.
  if [[ -n ${PROD_DEPS_PID:-} ]]; then kill "$PROD_DEPS_PID" 2>/dev/null || true; wait "$PROD_DEPS_PID" 2>/dev/null || true; fi
  for d in "${TMP_DIRS[@]}"; do rm_tree "$d" || true; done
  return 0
}
trap cleanup EXIT
# bash runs the EXIT trap on INT/TERM only if those are trapped too.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Pre-flight
# ---------------------------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot and device nodes in the rootfs need it)"
command -v npm >/dev/null || die "npm is needed on the build host (for the app and the Node binary)"
[[ -f $REPO/config.json && -f $REPO/package-lock.json ]] || die "$REPO does not look like the ossnas repo"
if [[ -n ${OSSFS_DEB:-} ]]; then
  OSSFS_DEB=$(realpath -e -- "$OSSFS_DEB" 2>/dev/null) || die "OSSFS_DEB: no such file"
  [[ $(dpkg-deb -f "$OSSFS_DEB" Package 2>/dev/null) == ossfs ]] || die "OSSFS_DEB: $OSSFS_DEB is not a Debian package named ossfs"
fi
NODE_PKG=$(node_package) || die "no Node package known for $(uname -m)"
mkdir -p "$CACHE"

# One build at a time per repo: two concurrent builds would race on the cache and $OUT.
exec 9>"$CACHE/.build.lock"
flock -n 9 || { log "another build holds $CACHE/.build.lock; waiting"; flock 9; }

# Cache key: anything that changes the base's content. The mirror is left out on purpose
# (any mirror of the same suite gives the same packages).
KEY=$(printf '%s\n' "recipe=$BASE_RECIPE_VERSION" "suite=$SUITE" "packages=${PACKAGES[*]}" \
        "node=$NODE_PKG@$NODE_VERSION" | sha256sum | cut -c1-12)
BASE=$CACHE/rootfs-base-$KEY
log "repo $REPO, output $OUT, base $BASE"

# A build killed with SIGKILL (or a machine reset) can leave its temp dirs, even with /proc
# still mounted in a half-made base; we hold the lock, so nobody else is using them.
for old in "$CACHE"/.rootfs-base-*.tmp.* "$OUT.tmp" "$OUT.old"; do
  if [[ -e $old ]]; then log "removing leftover $old"; rm_tree "$old"; fi
done

# ---------------------------------------------------------------------------------------------
# 1. Base rootfs (cached): debootstrap + packages + Node, shrunk
# ---------------------------------------------------------------------------------------------
if [[ -d $BASE ]]; then
  phase "base rootfs (cache hit)"
else
  phase "base rootfs (debootstrap)"
  if ! command -v debootstrap >/dev/null; then
    # Try without refreshing the package lists first: a fresh machine often has them already.
    apt-get install -y debootstrap || { apt-get update && apt-get install -y debootstrap; }
  fi
  MIRROR=$(debian_mirror) || die "found no '$SUITE' archive in apt's sources; set DEBIAN_MIRROR=URL"
  log "Debian mirror (from apt's configuration): $MIRROR"

  # Build next to the final place (same filesystem) and rename at the end: an interrupted
  # build leaves only a temp dir that the trap (or the next run) deletes, never a half base.
  TMP_BASE=$(mktemp -d "$CACHE/.rootfs-base-$KEY.tmp.XXXXXX")
  TMP_DIRS+=("$TMP_BASE")
  chmod 755 "$TMP_BASE"                         # mktemp makes 0700; this becomes the plugin's /

  debootstrap --variant=minbase "$SUITE" "$TMP_BASE" "$MIRROR"
  umount_under "$TMP_BASE"          # debootstrap unmounts its /proc and /sys; make sure of it

  phase "base rootfs (apt packages)"
  # No service may start inside the chroot during package installation.
  printf '#!/bin/sh\nexit 101\n' >"$TMP_BASE/usr/sbin/policy-rc.d"
  chmod 755 "$TMP_BASE/usr/sbin/policy-rc.d"
  # "Can not write log (Is /dev/pts mounted?)" from dpkg is harmless: nothing is mounted here.
  chroot "$TMP_BASE" "${CHROOT_ENV[@]}" apt-get update
  chroot "$TMP_BASE" "${CHROOT_ENV[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
  chroot "$TMP_BASE" "${CHROOT_ENV[@]}" apt-get clean
  rm -f "$TMP_BASE/usr/sbin/policy-rc.d"

  phase "base rootfs (node $NODE_VERSION)"
  # The official binary, from the npm registry (npm checks the tarball's integrity). Never the
  # host's node: the host may carry another version or a distro build.
  NODE_TMP=$(mktemp -d); TMP_DIRS+=("$NODE_TMP")
  fetch_node "$NODE_VERSION" "$NODE_TMP/node" || die "could not fetch $NODE_PKG@$NODE_VERSION from the npm registry"
  install -D -m 755 "$NODE_TMP/node/bin/node" "$TMP_BASE/usr/local/bin/node"
  got=$(chroot "$TMP_BASE" /usr/local/bin/node --version)   # also proves its libraries are there
  [[ $got == "v$NODE_VERSION" ]] || die "node in the rootfs reports $got, wanted v$NODE_VERSION"

  phase "base rootfs (shrink)"
  # Nothing in the plugin reads docs, man pages, translations or apt's indexes. Kept: the C.UTF-8
  # locale (/usr/lib/locale), zoneinfo, apt/dpkg themselves (dpkg -l stays useful for audits).
  rm -rf "$TMP_BASE"/var/lib/apt/lists/* "$TMP_BASE"/var/cache/apt/* \
         "$TMP_BASE"/usr/share/doc/* "$TMP_BASE"/usr/share/man/* "$TMP_BASE"/usr/share/info/* \
         "$TMP_BASE"/usr/share/locale/* "$TMP_BASE"/usr/share/lintian \
         "$TMP_BASE"/var/cache/debconf/*-old "$TMP_BASE"/var/lib/dpkg/*-old
  find "$TMP_BASE/var/log" -type f -delete
  # debootstrap copied the build host's resolver and name, and wrote the build mirror into
  # apt's sources: none of that belongs in a shipped image (Docker provides resolv.conf).
  : >"$TMP_BASE/etc/resolv.conf"
  printf 'ossnas\n' >"$TMP_BASE/etc/hostname"
  printf '# sources removed after the build (rootfs.build.sh); add your own to use apt here\n' \
    >"$TMP_BASE/etc/apt/sources.list"

  mv -T -- "$TMP_BASE" "$BASE"                   # atomic: the cache entry is complete or absent
  # Older bases (other keys) are dead weight now.
  for old in "$CACHE"/rootfs-base-*; do
    if [[ $old != "$BASE" && -d $old ]]; then log "removing old cached base $old"; rm_tree "$old"; fi
  done
fi

# ---------------------------------------------------------------------------------------------
# 2. The app: compile, and production dependencies in a staging dir
# ---------------------------------------------------------------------------------------------
phase "app (build + production deps)"
cd "$REPO"
# npm ci only when the installed tree is older than the lockfile: it deletes node_modules
# first, which would be slow and would pull the rug from anyone using the repo at the time.
# node_modules/.package-lock.json is what npm writes last; its mtime tracks the install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
STAGE=$(mktemp -d); TMP_DIRS+=("$STAGE")
mkdir -p "$STAGE/app"
cp package.json package-lock.json "$STAGE/app/"
# Production dependencies only, in the staging dir (the repo's node_modules keeps its dev
# tools); --ignore-scripts: nothing from the registry runs at build time. Runs in the
# background while tsc compiles: the two are independent and each takes a few seconds.
(cd "$STAGE/app" && exec npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error) &
PROD_DEPS_PID=$!
# Compile straight into the staging dir (tsc's --outDir overrides tsconfig's): the image gets
# exactly what today's sources produce, without stale files a past build left in dist/, and
# the repo's dist/ is not rewritten under the feet of anyone running from it.
npm run --silent build -- --outDir "$STAGE/app/dist"
wait "$PROD_DEPS_PID" || die "npm ci --omit=dev failed"
PROD_DEPS_PID=
[[ -f $STAGE/app/dist/main.js ]] || die "build produced no dist/main.js"
# The spawn helper, built by the build's postbuild step (scripts/build-native.sh), static.
mkdir -p "$STAGE/app/native"
cp native/ossnas-spawn "$STAGE/app/native/" || die "build produced no native/ossnas-spawn"

# ---------------------------------------------------------------------------------------------
# 3. Assemble $OUT.tmp, then swap it in
# ---------------------------------------------------------------------------------------------
phase "assemble"
NEW=$OUT.tmp
rm_tree "$NEW"
TMP_DIRS+=("$NEW")
mkdir -p "$NEW"
# A fresh copy: the plugin tree must never share inodes with the cache (hard links would let
# a change in one corrupt the other). reflink makes it near-free on btrfs/xfs.
cp -a --reflink=auto "$BASE" "$NEW/rootfs"
cp -a "$STAGE/app" "$NEW/rootfs/app"
chown -R 0:0 "$NEW/rootfs/app"
# Mount points and directories the app and config.json expect (config.json's mounts need their
# destinations to exist; the socket dir is where dockerd looks for ossnas.sock).
mkdir -p "$NEW"/rootfs/{run/docker/plugins,mnt/volumes,var/lib/ossnas,etc/ossnas/credentials,run/ossnas}

if [[ -n ${OSSFS_DEB:-} ]]; then
  phase "ossfs ($(dpkg-deb -f "$OSSFS_DEB" Version))"
  # Into the copy, never the cached base: a build without OSSFS_DEB must not get it. The base
  # keeps no package lists or sources (shrink, above), so apt gets both for this install only.
  ROOT=$NEW/rootfs
  MIRROR=$(debian_mirror) || die "found no '$SUITE' archive in apt's sources; set DEBIAN_MIRROR=URL"
  cp -- "$OSSFS_DEB" "$ROOT/tmp/ossfs.deb"
  cp -- "$ROOT/etc/apt/sources.list" "$ROOT/tmp/sources.list.shipped"
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOT/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
  chroot "$ROOT" "${CHROOT_ENV[@]}" apt-get update -qq
  chroot "$ROOT" "${CHROOT_ENV[@]}" apt-get install -y --no-install-recommends /tmp/ossfs.deb
  chroot "$ROOT" "${CHROOT_ENV[@]}" apt-get clean
  mv -- "$ROOT/tmp/sources.list.shipped" "$ROOT/etc/apt/sources.list"
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/tmp/ossfs.deb "$ROOT/usr/sbin/policy-rc.d"
  # The plugin picks ossfs when it finds it on this PATH (src/backends/oss/index.ts).
  chroot "$ROOT" "${CHROOT_ENV[@]}" sh -c 'command -v ossfs' >/dev/null || die "the ossfs package put no ossfs command on the PATH"
fi
# Fail here rather than at `docker plugin create` if config.json is not valid JSON.
node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$REPO/config.json" \
  || die "config.json is not valid JSON"
cp "$REPO/config.json" "$NEW/config.json"

# Swap: two renames (coreutils 9.1 has no `mv --exchange`). Between them $OUT is briefly
# absent, but it is never half-written; if we die right there, $OUT.old is still whole (it is
# only deleted once the new tree is in place, or by the next run's leftover sweep).
[[ -e $OUT ]] && mv -T -- "$OUT" "$OUT.old"
mv -T -- "$NEW" "$OUT"
phase "cleanup"
TMP_DIRS+=("$OUT.old")
cleanup; TMP_DIRS=()
phase ""

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
log "phase times:"
for t in "${TIMES[@]}"; do log "  $t"; done
log "  total                          $(printf '%6.1f' "$(( $(now_ms) - SCRIPT_T0 ))e-3") s"
log "rootfs size: $(du -sh "$OUT/rootfs" | cut -f1)   (base: $(du -sh "$BASE" | cut -f1), app: $(du -sh "$OUT/rootfs/app" | cut -f1))"
log "bundle ready: $OUT   ->   docker plugin create ossnas $OUT"
