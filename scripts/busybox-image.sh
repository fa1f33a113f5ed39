#!/usr/bin/env bash
# Makes a tiny local image NAME (default ossnas/busybox) from Debian's busybox-static, since no
# image can be pulled here. Such an image has no `true`: use `sh -c :`. It deliberately has no
# /data: where an image has the destination directory, Docker copies it into an empty volume and
# sets the volume root's owner and mode, which an s3fs bucket root refuses (see docs/troubleshooting.md, failed to chmod).
set -euo pipefail
name=${1:-ossnas/busybox:1}
if docker image inspect "$name" >/dev/null 2>&1; then exit 0; fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/tmp"
cp /bin/busybox "$dir/bin/busybox"
# Every applet as a hard link to it, made by busybox itself in one process: a loop of `ln` took
# 13 s and more in the NFS guest under TCG (scripts/nfs-guest.sh), where each exec is slow. Symbolic
# links, one `ln` each, where this busybox cannot install itself.
if ! "$dir/bin/busybox" --install "$dir/bin" 2>/dev/null; then
  for applet in $("$dir/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
fi
tar -C "$dir" -c . | docker import - "$name" >/dev/null
echo "image $name imported"
