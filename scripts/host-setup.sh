#!/usr/bin/env bash
# Prepares a machine of our kind (Debian 12, root, apt and npm registries only) for building
# and testing ossnas: Debian packages, npm dependencies, and a running Docker engine.
# Idempotent: it installs only what is missing and starts dockerd only if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
  echo "host-setup: run as root (it installs packages, starts dockerd and mounts FUSE filesystems)" >&2
  exit 1
fi

# docker.io: the engine (Debian's, since no container registry is reachable);
# s3fs + fuse3: the FUSE client the integration tests drive directly;
# debootstrap: builds the plugin rootfs; docker-registry: distribution tests;
# busybox-static: the one-binary image test containers run;
# qemu-system-x86: the guest kernel with NFS that the NAS tests run in (scripts/nfs-guest.sh;
# this machine's kernel has no NFS), which also fetches its kernel package with apt-get download;
# rclone: `rclone serve docker`, the plugin the benchmarks (bench/) measure ossnas against.
packages=(docker.io s3fs fuse3 util-linux e2fsprogs xfsprogs debootstrap docker-registry busybox-static ca-certificates curl
          qemu-system-x86 rclone)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -e /dev/fuse ] || modprobe fuse || true

# The project's Node (.node-version), the same binary the rootfs ships, at .cache/node/bin/node:
# test/run.sh puts it first on PATH, so the host-process tests run what the plugin runs. The

# shellcheck source=scripts/lib/node.sh
REPO=$repo; source scripts/lib/node.sh
node_v=$(node_version)
if [ ! -x ".cache/node-$node_v/bin/node" ]; then
  echo "host-setup: fetching node $node_v from the npm registry"
  mkdir -p .cache
  fetch_node "$node_v" ".cache/node-$node_v"
fi
ln -sfn "node-$node_v" .cache/node
export PATH="$repo/.cache/node/bin:$PATH"

# npm dependencies, when missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "host-setup: npm ci"
  npm ci --no-audit --no-fund >/dev/null
fi

# A Docker engine. None runs on a fresh machine of this kind: start Debian's in the background.
if ! docker version >/dev/null 2>&1; then
  mkdir -p .cache
  echo "host-setup: starting dockerd (log: $repo/.cache/dockerd.log)"
  setsid nohup dockerd --host unix:///var/run/docker.sock >.cache/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker version >/dev/null 2>&1 || { echo "host-setup: dockerd did not start; see .cache/dockerd.log" >&2; tail -20 .cache/dockerd.log >&2; exit 1; }
fi
echo "host-setup: ready (docker $(docker version --format '{{.Server.Version}}'))"
