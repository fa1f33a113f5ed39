#!/usr/bin/env bash
# A Docker swarm of several dockerd nodes on this one machine, as Moby's own integration suite
# runs them: each node is a dockerd with its own socket, data root, exec root, pid file and log,
# and its own containerd (which dockerd starts under its exec root). Node 1 is the manager; the
# others join as workers over 127.0.0.1 ports. A local registry (Debian's docker-registry) is
# started with it, for `docker plugin push` and `install` as operators do it.
#
#   cluster.sh up [N]        N nodes (default 3) in one swarm, the test image on each, the registry
#   cluster.sh down          every node leaves and stops; all their files and mounts are removed
#   cluster.sh kill NODE     the node fails: kill -9 of its dockerd, containerd, shims, containers,
#                            plugins and their FUSE clients, all at once (the host stays up, so
#                            kernel mounts and dead FUSE mounts stay where they were)
#   cluster.sh start NODE    the failed node comes back (same data root: its containers, plugins, swarm)
#   cluster.sh env NODE      DOCKER_HOST=... for that node
#   cluster.sh pids NODE     every process of the node (what `kill` kills)
#   cluster.sh info          one line per node: name, socket, pid, log, plus the registry
#
# Nodes are light for a 2-core machine: no iptables rules, and a bridge of each node's own
# (ossnas-nN, 10.231.N.0/24), never the host's docker0. Every node reports the
# same hostname; each is labelled ossnas.node=nN in the swarm. Ports: OSSNAS_CLUSTER_PORT (default
# 4377) + node number for swarm, OSSNAS_CLUSTER_PORT + 100 for the registry. Files:
# OSSNAS_CLUSTER_DIR (default /var/lib/ossnas-cluster) and /run/ossnas-cluster (sockets, exec roots).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

base=${OSSNAS_CLUSTER_DIR:-/var/lib/ossnas-cluster}
run=/run/ossnas-cluster
port0=${OSSNAS_CLUSTER_PORT:-4377}
registry_addr=127.0.0.1:$((port0 + 100))
image=${OSSNAS_CLUSTER_IMAGE:-ossnas/busybox:1}

die() { echo "cluster: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it starts dockerd)"

sock() { echo "$run/$1/docker.sock"; }
dk() { local node=$1; shift; docker -H "unix://$(sock "$node")" "$@"; }
pid_of() { cat "$run/$1/docker.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
nodes() { local d; for d in "$base"/n[0-9]*; do [ -d "$d" ] && basename "$d"; done | sort -V; }

# A bridge of the node's own, with its own subnet: with --bridge none, dockerd deletes the link
# named docker0, which is the host's own dockerd's bridge here (one network namespace for all).
bridge_of() { echo "ossnas-$1"; }
ensure_bridge() {
  local node=$1 n=${1#n} br
  br=$(bridge_of "$node")
  if ! ip link show "$br" >/dev/null 2>&1; then
    ip link add "$br" type bridge
    ip addr add "10.231.$n.1/24" dev "$br"
  fi
  ip link set "$br" up
}

start_node() {
  local node=$1
  mkdir -p "$base/$node/data" "$run/$node/exec"
  alive "$node" && return 0
  ensure_bridge "$node"
  # setsid: the node outlives this script, and a bare `wait` in a caller never waits on it.
  setsid dockerd \
    --host "unix://$(sock "$node")" \
    --data-root "$base/$node/data" \
    --exec-root "$run/$node/exec" \
    --pidfile "$run/$node/docker.pid" \
    --bridge "$(bridge_of "$node")" --iptables=false --ip-masq=false --ip-forward=false \
    --userland-proxy=false \
    </dev/null >>"$base/$node/dockerd.log" 2>&1 &
  local i
  for i in $(seq 1 120); do
    dk "$node" version >/dev/null 2>&1 && return 0
    kill -0 $! 2>/dev/null || break
    sleep 0.25
  done
  tail -20 "$base/$node/dockerd.log" >&2
  die "dockerd of $node did not answer; log: $base/$node/dockerd.log"
}

start_registry() {
  local pidf=$run/registry.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then return 0; fi
  command -v docker-registry >/dev/null || die "docker-registry is missing: apt-get install docker-registry"
  mkdir -p "$base/registry"
  # No auth (the packaged config wants htpasswd); dockerd trusts a 127.0.0.0/8 registry over HTTP.
  cat >"$base/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $base/registry/data
  delete:
    enabled: true
http:
  addr: $registry_addr
EOF
  setsid docker-registry serve "$base/registry/config.yml" </dev/null >>"$base/registry/registry.log" 2>&1 &
  echo $! >"$pidf"
  local i
  for i in $(seq 1 80); do
    curl -fsS "http://$registry_addr/v2/" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "the registry did not answer on $registry_addr; log: $base/registry/registry.log"
}

swarm_state() { dk "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

join_swarm() {
  local node=$1 n=${1#n}
  [ "$(swarm_state "$node")" = active ] && return 0
  local addr=127.0.0.1:$((port0 + n))
  if [ "$node" = n1 ]; then
    dk n1 swarm init --listen-addr "$addr" --advertise-addr "$addr" >/dev/null
  else
    dk "$node" swarm join --listen-addr "$addr" --advertise-addr "$addr" \
      --token "$(dk n1 swarm join-token -q worker)" "127.0.0.1:$((port0 + 1))" >/dev/null
  fi
  dk n1 node update --label-add "ossnas.node=$node" "$(dk "$node" info --format '{{.Swarm.NodeID}}')" >/dev/null
}

load_image() {
  local node=$1
  dk "$node" image inspect "$image" >/dev/null 2>&1 && return 0
  if docker image inspect "$image" >/dev/null 2>&1; then
    docker save "$image" | dk "$node" load >/dev/null
  else
    DOCKER_HOST="unix://$(sock "$node")" bash "$repo/scripts/busybox-image.sh" "$image" >/dev/null
  fi
}

cmd_up() {
  local count=${1:-3} i
  [ "$count" -ge 1 ] || die "N must be at least 1"
  mkdir -p "$base" "$run"
  # Swarm makes a bridge docker_gwbridge in the (shared) network namespace: removed at `down`
  # only when the cluster made it.
  [ -e "$run/gwbridge-existed" ] || [ -e "$run/gwbridge-new" ] ||
    { ip link show docker_gwbridge >/dev/null 2>&1 && touch "$run/gwbridge-existed" || touch "$run/gwbridge-new"; }
  start_registry
  # Started together: each dockerd takes about a second, mostly waiting.
  local starters=()
  for i in $(seq 1 "$count"); do start_node "n$i" & starters+=($!); done
  for i in "${starters[@]}"; do wait "$i" || true; done
  for i in $(seq 1 "$count"); do alive "n$i" || die "node n$i is not running; log: $base/n$i/dockerd.log"; done
  for i in $(seq 1 "$count"); do join_swarm "n$i"; load_image "n$i"; done
  cmd_info
}

# Every process of a node: its dockerd and containerd, the shims of that containerd, everything
# below those shims (containers, plugins), and every process in a plugin's mount namespace (the
# FUSE clients, which leave the plugin's cgroup so as to outlive the plugin process).
node_pids() {
  local node=$1 d pid
  local address="$run/$node/exec/containerd/containerd.sock"
  local -A seen=()
  local queue=()
  pid=$(pid_of "$node"); [ -n "$pid" ] && queue+=("$pid")
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -qF -- "$address" && queue+=("$pid")
  done
  while [ ${#queue[@]} -gt 0 ]; do
    pid=${queue[0]}; queue=("${queue[@]:1}")
    [ -n "${seen[$pid]:-}" ] && continue
    seen[$pid]=1
    queue+=($(cat /proc/"$pid"/task/*/children 2>/dev/null))
  done
  local -A ns=()
  for pid in "${!seen[@]}"; do
    grep -q '/app/dist/main.js' "/proc/$pid/cmdline" 2>/dev/null && ns[$(readlink "/proc/$pid/ns/mnt")]=1
  done
  if [ ${#ns[@]} -gt 0 ]; then
    for d in /proc/[0-9]*; do
      [ -n "${ns[$(readlink "$d/ns/mnt" 2>/dev/null || echo none)]:-}" ] && seen[${d#/proc/}]=1
    done
  fi
  echo "${!seen[@]}"
}

cmd_kill() {
  local node=${1:?node name, e.g. n2}
  [ -d "$base/$node" ] || die "no node $node"
  local pids
  pids=$(node_pids "$node")
  [ -n "$pids" ] || die "node $node has no process"
  # All at once: a node that fails does not stop its parts in an orderly sequence.
  kill -9 $pids 2>/dev/null || true
  local i p left
  for i in $(seq 1 100); do
    left=""
    for p in $pids; do [ -e "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && left+=" $p"; done
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || die "processes of $node still run after kill -9:$left"
  echo "killed $node: $(echo $pids | wc -w) processes"
}

cmd_start() {
  local node=${1:?node name, e.g. n2}
  [ -d "$base/$node" ] || die "no node $node"
  start_node "$node"
  echo "started $node"
}

cmd_down() {
  local node p
  for node in $(nodes); do
    if alive "$node"; then
      # Containers and plugins first, so that nothing holds a mount under the node's roots.
      dk "$node" swarm leave --force >/dev/null 2>&1 || true
      local cs; cs=$(dk "$node" ps -aq 2>/dev/null || true)
      [ -n "$cs" ] && dk "$node" rm -f $cs >/dev/null 2>&1 || true
      for p in $(dk "$node" plugin ls -q 2>/dev/null || true); do
        for v in $(dk "$node" volume ls -q --filter "driver=$p" 2>/dev/null || true); do dk "$node" volume rm -f "$v" >/dev/null 2>&1 || true; done
        dk "$node" plugin disable -f "$p" >/dev/null 2>&1 || true
        dk "$node" plugin rm -f "$p" >/dev/null 2>&1 || true
      done
    fi
    local pids; pids=$(node_pids "$node")
    if [ -n "$pids" ]; then
      kill -TERM $(pid_of "$node") 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$node" || break; sleep 0.2; done
      pids=$(node_pids "$node"); [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    fi
  done
  [ -f "$run/registry.pid" ] && kill "$(cat "$run/registry.pid")" 2>/dev/null || true
  sleep 0.2
  # Whatever the nodes left mounted (overlays, netns files, the plugins' mounts), deepest first.
  local m
  for m in $(awk -v a="$base/" -v b="$run/" 'index($5, a) == 1 || index($5, b) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for node in $(nodes); do ip link del "$(bridge_of "$node")" 2>/dev/null || true; done
  [ -e "$run/gwbridge-new" ] && ip link del docker_gwbridge 2>/dev/null || true
  rm -rf "$base" "$run"
  echo "cluster removed"
}

cmd_env() { echo "DOCKER_HOST=unix://$(sock "${1:?node name}")"; }

cmd_info() {
  local node
  for node in $(nodes); do
    echo "$node unix://$(sock "$node") pid=$(pid_of "$node") log=$base/$node/dockerd.log state=$(swarm_state "$node")"
  done
  echo "registry $registry_addr"
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  kill) shift; cmd_kill "$@" ;;
  start) shift; cmd_start "$@" ;;
  env) shift; cmd_env "$@" ;;
  pids) shift; node_pids "${1:?node name}" ;;
  info) cmd_info ;;
  *) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
