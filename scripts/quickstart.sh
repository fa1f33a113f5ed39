#!/usr/bin/env bash
# Quick start, as root on a fresh machine of our kind: builds the plugin, installs it into the
# local Docker engine as `ossnas`, starts an embedded S3 server (s3rver on 127.0.0.1:9555), and
# shows a container writing to a volume on it. It leaves everything running to play with.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

S3_PORT=${S3_PORT:-9555}
S3_DATA=${S3_DATA:-/var/lib/ossnas-demo-s3}
PLUGIN=${PLUGIN:-ossnas}
VOLUME=ossnas-demo
IMAGE=ossnas/busybox:1

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
step() { printf '\n== %s\n' "$*"; }
# PIDs of this quick start's S3 server (node .../s3rver.js -d $S3_DATA ...), from /proc: no procps needed.
s3rver_pids() {
  local f argv
  for f in /proc/[0-9]*/cmdline; do
    argv=$( { tr '\0' ' ' <"$f"; } 2>/dev/null) || continue
    case $argv in *"s3rver.js -d $S3_DATA "*) f=${f#/proc/}; echo "${f%/cmdline}" ;; esac
  done
}

step "preparing the host (packages, npm dependencies, dockerd)"
bash scripts/host-setup.sh

step "building the plugin bundle (plugin/config.json + plugin/rootfs)"
t=$(now); bash rootfs.build.sh >/dev/null; echo "built in $(took "$t")"

step "installing it into Docker as '$PLUGIN'"
if docker plugin inspect "$PLUGIN" >/dev/null 2>&1; then
  docker volume rm "$VOLUME" >/dev/null 2>&1 || true
  docker plugin disable -f "$PLUGIN" >/dev/null 2>&1 || true
  docker plugin rm -f "$PLUGIN" >/dev/null
fi
# The plugin binds these host directories (state survives upgrades; profiles are read-only).
mkdir -p /var/lib/ossnas /etc/ossnas/credentials
t=$(now); docker plugin create "$PLUGIN" plugin >/dev/null; echo "docker plugin create: $(took "$t")"
t=$(now); docker plugin enable --timeout 120 "$PLUGIN" >/dev/null; echo "docker plugin enable: $(took "$t")"

step "starting the embedded S3 server on 127.0.0.1:$S3_PORT (data in $S3_DATA, bucket 'demo')"
if ! curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
  mkdir -p "$S3_DATA"
  setsid nohup node node_modules/s3rver/bin/s3rver.js -d "$S3_DATA" -a 127.0.0.1 -p "$S3_PORT" \
    --configure-bucket demo >"$repo/.cache/s3rver.log" 2>&1 </dev/null &
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break; sleep 0.2; done
fi
# A credentials profile: the preferred way, since every -o shows in `docker volume inspect`.
# The plugin refuses a profile that other users can read or change.
umask 077
printf 'akId=S3RVER\nakSecret=S3RVER\n' >/etc/ossnas/credentials/demo
chmod 600 /etc/ossnas/credentials/demo

step "creating volume '$VOLUME' on bucket 'demo'"
bash scripts/busybox-image.sh "$IMAGE"
docker volume create -d "$PLUGIN" -o type=oss -o bucket=demo -o "url=http://127.0.0.1:$S3_PORT" \
  -o credentials=demo "$VOLUME"

step "a container writes to the volume"
mount="type=volume,src=$VOLUME,dst=/data,volume-driver=$PLUGIN"
docker run --rm --mount "$mount" "$IMAGE" sh -c 'echo "hello from a container, $(date -u)" > /data/hello.txt; ls -l /data'

step "the object, read straight from the S3 server"
curl -s "http://127.0.0.1:$S3_PORT/demo/hello.txt"

step "a second container reads it through the volume"
docker run --rm --mount "$mount" "$IMAGE" cat /data/hello.txt

step "docker volume inspect $VOLUME"
docker volume inspect "$VOLUME"

s3pids=$(s3rver_pids | tr '\n' ' ')
s3pids=${s3pids% }
if [ -n "$s3pids" ]; then
  s3kill="kill $s3pids"
else
  # Not found (another server answers on the port): the command that finds it.
  s3kill="kill \$(pgrep -f 's3rver.js -d $S3_DATA')"
fi

cat <<MSG

Done. Try:  docker run --rm -it --mount $mount $IMAGE sh
Clean up:   docker volume rm $VOLUME; docker plugin disable -f $PLUGIN; docker plugin rm $PLUGIN
            $s3kill   (only this S3 server)
            rm -rf $S3_DATA /etc/ossnas/credentials/demo   (the bucket's data and the demo profile)
MSG
