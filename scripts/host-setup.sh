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

# docker.io: the engine (Debian's, since no container registry is reachable), only when the
# machine has no Docker at all (see below);
# s3fs + fuse3: the FUSE client the integration tests drive directly;
# debootstrap: builds the plugin rootfs; docker-registry: distribution tests;
# busybox-static: the one-binary image test containers run;
# qemu-system-x86: the guest kernel with NFS that the NAS tests run in (scripts/nfs-guest.sh;
# this machine's kernel has no NFS), which also fetches its kernel package with apt-get download;
# rclone: `rclone serve docker`, the plugin the benchmarks (bench/) measure ossnas against;
# gcc + libc6-dev: the build compiles the spawn helper (native/ossnas-spawn.c), statically.
packages=(s3fs fuse3 util-linux e2fsprogs xfsprogs debootstrap docker-registry busybox-static ca-certificates curl
          qemu-system-x86 rclone gcc libc6-dev)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# A Docker that is already here, whoever installed it, is used as it is: Docker CE (docker-ce,
# containerd.io) and Debian's docker.io conflict, so installing docker.io next to it would fail
# or replace it. "Already here": Debian's docker.io, a Docker CE or Moby package (docker-ce,
# docker-ce-cli, containerd.io, moby-engine), a dockerd binary on PATH, or a daemon answering on
# /var/run/docker.sock. A docker CLI alone is no engine (some machines carry a client binary in
# /usr/local/bin): docker.io is installed beside it.
docker_found=
if installed docker.io; then
  docker_found="Debian's docker.io"
else
  for p in docker-ce docker-ce-cli containerd.io moby-engine; do
    if installed "$p"; then docker_found="the $p package"; break; fi
  done
  if [ -z "$docker_found" ] && command -v dockerd >/dev/null 2>&1; then docker_found="$(command -v dockerd)"; fi
  if [ -z "$docker_found" ] && [ -S /var/run/docker.sock ] && command -v curl >/dev/null 2>&1 \
     && curl -fsS --max-time 5 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; then
    docker_found="the daemon answering on /var/run/docker.sock"
  fi
fi
if [ -n "$docker_found" ]; then
  [ "$docker_found" = "Debian's docker.io" ] || echo "host-setup: using the Docker already installed ($docker_found); docker.io is not installed"
else
  packages=(docker.io "${packages[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -e /dev/fuse ] || modprobe fuse || true

# The project's Node (.node-version), the same binary the rootfs ships, at .cache/node/bin/node:
# test/run.sh puts it first on PATH, so the host-process tests run what the plugin runs (and so
# does npm from here on).
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

# The docker CLI: docker.io brings it; another Docker needs its own (docker-ce-cli).
if ! command -v docker >/dev/null 2>&1; then
  echo "host-setup: a Docker engine is installed ($docker_found) but the docker command is not on PATH;" \
       "install its CLI (for Docker CE: apt-get install docker-ce-cli) and run this again" >&2
  exit 1
fi

# A Docker engine that answers. None runs on a fresh machine of this kind: start Debian's dockerd
# in the background, its output in .cache/dockerd.log. A Docker that was here before (Docker CE)
# is started as its systemd unit when it has one, else its dockerd the same way.
if ! docker version >/dev/null 2>&1; then
  mkdir -p .cache
  if [ -n "$docker_found" ] && [ "$docker_found" != "Debian's docker.io" ] && [ -d /run/systemd/system ] \
     && systemctl cat docker.service >/dev/null 2>&1; then
    echo "host-setup: starting docker.service (systemctl start docker)"
    systemctl start docker || true
  elif command -v dockerd >/dev/null 2>&1; then
    echo "host-setup: starting dockerd (log: $repo/.cache/dockerd.log)"
    setsid nohup dockerd --host unix:///var/run/docker.sock >.cache/dockerd.log 2>&1 </dev/null &
  else
    echo "host-setup: Docker is installed ($docker_found) but no daemon answers on /var/run/docker.sock," \
         "there is no dockerd on PATH and no docker.service to start; start your Docker engine and run this again" >&2
    exit 1
  fi
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker version >/dev/null 2>&1; then
    echo "host-setup: the Docker engine (${docker_found:-docker.io}) did not start; docker version says:" >&2
    docker version 2>&1 | tail -3 >&2 || true
    if [ -f .cache/dockerd.log ]; then echo "host-setup: last lines of $repo/.cache/dockerd.log:" >&2; tail -20 .cache/dockerd.log >&2; fi
    if [ -d /run/systemd/system ]; then echo "host-setup: see also: systemctl status docker; journalctl -u docker" >&2; fi
    exit 1
  fi
fi
echo "host-setup: ready (docker $(docker version --format '{{.Server.Version}}'))"
