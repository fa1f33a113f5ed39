#!/usr/bin/env bash
# Run a command inside a throwaway qemu guest that has a working NFS server and client.
#
# Why: the kernel of the machines this project runs on has no NFS at all (`mount -t nfs` says
# "No such device"), and no module can be loaded into it. So the NAS code is exercised in a
# small VM instead: Debian's own cloud kernel (which has nfs, nfsv3, nfsv4 and nfsd as modules)
# booting a Debian 12 minbase root, serving /srv/nfs to itself on loopback.
#
# Usage:  scripts/nfs-guest.sh [--] COMMAND [ARG...]        (as root, from any directory)
#
#   COMMAND runs in /ossnas inside the guest, where the repo's package.json, tsconfig*.json,
#   scripts/, src/, test/, node_modules/, dist/ and native/ (if present) are; the host's node binary is
#   at /usr/local/bin/node. Its stdout and stderr (merged, and not a TTY) stream to this
#   script's stdout; this script exits with COMMAND's exit code.
#
#   Inside the guest, before COMMAND starts:
#     - 127.0.0.1:/srv/nfs is exported (rw,sync,no_subtree_check,no_root_squash,insecure) and
#       served over NFS v3, v4.0, v4.1 (and 4.2); /srv/nfs/hello.txt holds "hello from nfs".
#       Mount it as `mount -t nfs -o vers=3,nolock 127.0.0.1:/srv/nfs /mnt`, or
#       `mount -t nfs4 -o vers=4.1 127.0.0.1:/srv/nfs /mnt` (same path for v3 and v4: there is
#       no fsid=0 pseudo-root).
#     - `/usr/local/sbin/ossnas-nfsd stop` stops serving (no nfsd threads: connections to port
#       2049 are refused); `/usr/local/sbin/ossnas-nfsd start` serves the same exports again.
#     - cgroup v2 only: the kernel boots with cgroup_no_v1=all (no controller can be bound to a
#       v1 hierarchy) and cgroup2 is mounted at /sys/fs/cgroup, as on a systemd host in unified
#       mode (but PID 1 is tini, not systemd: everything starts in the root cgroup).
#     - Debian's docker.io (dockerd, the docker CLI, containerd, runc) is installed but not
#       running: a test that needs dockerd starts it itself (test/guest/nas-docker.test.ts shows
#       the flags that work here: no network, so --bridge=none --iptables=false, and overlay2
#       after `modprobe overlay`). No image can be pulled: scripts/busybox-image.sh makes one.
#       FUSE (for the managed plugin's s3fs) needs `modprobe fuse` first: fuse.ko is a module,
#       and /dev/fuse appears only once it is loaded.
#     - With NFS_GUEST_BUNDLE set, the plugin bundle is at /ossnas-bundle (config.json +
#       rootfs/), for `docker plugin create`: the guest cannot build one (no network).
#
# Env:    NFS_GUEST_TIMEOUT=SECONDS  give up (and kill qemu) if COMMAND has not finished by then,
#                                    counted from qemu's start (default 900)
#         NFS_GUEST_ENV="NAME..."    host variables passed on into COMMAND's environment
#                                    (CI is always passed on when set)
#         NFS_GUEST_VERBOSE=1        also show the boot and all kernel messages (on stderr)
#         NFS_GUEST_ACCEL=ACCEL      qemu -accel value (default tcg,thread=multi: KVM exists on
#                                    these machines but qemu aborts with it, "failed to set MSR
#                                    0x10a"; with -cpu host,-arch-capabilities the guest hangs)
#         NFS_GUEST_CMDLINE="ARG..." more kernel command line arguments
#         NFS_GUEST_BUNDLE=DIR       a managed plugin bundle (DIR/config.json, DIR/rootfs/, as
#                                    rootfs.build.sh writes it) copied into the guest at
#                                    /ossnas-bundle (hard links when on the same filesystem as
#                                    <repo>/.cache; ~390 MB more image)
#         DEBIAN_MIRROR=URL          override the mirror otherwise read from apt's configuration
#
# Host packages needed: qemu-system-x86, debootstrap, e2fsprogs, apt, dpkg, coreutils,
# util-linux, and a node binary (the host's `node`, glibc-based, e.g. bookworm's or NodeSource's).
#
# The slow part (kernel download, debootstrap, apt: 1.5 to 2.5 minutes here, docker.io
# included) is cached under <repo>/.cache/nfs-guest-<key>/, the key being a hash of this script
# and the kernel package's name and version. Each run then only assembles a fresh ext4 image (a
# few seconds) and boots it. The last run's whole serial console is kept in
# <repo>/.cache/nfs-guest-last-console.log.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
SELF=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/$(basename -- "${BASH_SOURCE[0]}")
REPO=$(cd -- "$(dirname -- "$SELF")/.." && pwd -P)      # the script lives in <repo>/scripts
CACHE=$REPO/.cache                                        # git-ignored
SUITE=bookworm
# The meta package decides the kernel: a fresh machine (CI) resolves it to the same version as
# long as its apt lists are as recent, and a new Debian kernel simply changes the cache key.
KERNEL_META=linux-image-cloud-amd64
# nfs-kernel-server brings nfs-common (mount.nfs, rpc.statd) and rpcbind. busybox-static is the
# whole userland of the initramfs (virtio_blk is a module in this kernel, so something has to
# load it before the root can be mounted) and provides poweroff, which minbase lacks. tini is
# PID 1 (see the guest init). docker.io: a real dockerd for the tests that run containers on NAS
# volumes (test/guest/nas-docker.test.ts); it brings containerd, runc and iptables (a hard
# dependency, unused: those tests start dockerd with --iptables=false). Nothing starts it: a test
# starts it when it needs it.
GUEST_PACKAGES=(nfs-kernel-server nfs-common rpcbind util-linux mount kmod iproute2 procps
                e2fsprogs busybox-static tini docker.io)
# Repo entries copied to /ossnas (when present; globs are expanded in the repo). Not .git, .cache
# or plugin/: large, and no test reads them. scripts: the docker tests import their busybox
# image with scripts/busybox-image.sh; native: the spawn helper every process start goes through.
REPO_ENTRIES=('package.json' 'tsconfig*.json' 'scripts' 'src' 'test' 'node_modules' 'dist' 'native')

TIMEOUT=${NFS_GUEST_TIMEOUT:-900}
VERBOSE=${NFS_GUEST_VERBOSE:-0}
ACCEL=${NFS_GUEST_ACCEL:-tcg,thread=multi}
GUEST_INIT=/usr/local/sbin/ossnas-guest-init

export LC_ALL=C.UTF-8
CHROOT_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
            DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
log() { printf '[nfs-guest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF" >&2; exit "${1:-2}"; }

now_ms() { date +%s%3N; }
secs() { printf '%.1f' "$(( $1 ))e-3"; }                 # milliseconds -> "12.3"
SCRIPT_T0=$(now_ms)
PHASE_NAME='' PHASE_T0=0
TIMES=()
# phase NAME: close the running phase (log its time) and start the next one.
phase() {
  local t line; t=$(now_ms)
  if [[ -n $PHASE_NAME ]]; then
    line=$(printf '%-28s %6s s' "$PHASE_NAME" "$(secs "t - PHASE_T0")")
    TIMES+=("$line"); log "done: $line"
  fi
  PHASE_NAME=$1 PHASE_T0=$t
  [[ -n $1 ]] && log "phase: $1"
  return 0
}

# umount_under, rm_tree, debian_mirror: shared with rootfs.build.sh
# shellcheck source=scripts/lib/debian-tree.sh
source "$REPO/scripts/lib/debian-tree.sh"

# link_tree SRC... DEST: copy into DEST, as hard links when on the same filesystem. The staging
# tree is only read (by mkfs), never written through, so sharing inodes with the cache and the
# repo is safe, and it turns a copy of ~500 MB into a few thousand link() calls.
link_tree() {
  local dest=${*: -1}
  [[ -e $dest ]] || dest=$(dirname -- "$dest")
  if [[ $(stat -c %d -- "$1") == "$(stat -c %d -- "$dest")" ]]; then
    cp -al -- "$@"
  else
    cp -a -- "$@"
  fi
}

# Temporary directories to remove however the script ends, and qemu to stop.
TMP_DIRS=()
QEMU_PID='' READER_PID='' CONSOLE=''
cleanup() {
  local d
  if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true
  fi
  # The console reader ends by itself once qemu is gone (tail --pid).
  if [[ -n $READER_PID ]]; then wait "$READER_PID" 2>/dev/null || true; fi
  if [[ -n $CONSOLE && -f $CONSOLE ]]; then cp "$CONSOLE" "$CACHE/nfs-guest-last-console.log" 2>/dev/null || true; fi
  for d in "${TMP_DIRS[@]}"; do rm_tree "$d" || true; done
  return 0
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT   # bash runs the EXIT trap on INT/TERM only if trapped
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Arguments and prerequisites
# ---------------------------------------------------------------------------------------------
case ${1:-} in
  -h|--help) usage 0 ;;
  --) shift ;;
esac
[[ $# -gt 0 ]] || usage 2
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "NFS_GUEST_TIMEOUT must be a number of seconds, not '$TIMEOUT'"
if [[ -n ${NFS_GUEST_BUNDLE:-} ]]; then
  [[ -f $NFS_GUEST_BUNDLE/config.json && -d $NFS_GUEST_BUNDLE/rootfs ]] \
    || die "NFS_GUEST_BUNDLE=$NFS_GUEST_BUNDLE has no config.json and rootfs/ (build one with OUT=DIR bash rootfs.build.sh)"
fi

[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot, and reading the root-only files of the guest root)"
[[ $(uname -m) == x86_64 ]] || die "only x86_64 hosts are supported (the guest kernel is amd64)"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2 (for $1)"); }
need qemu-system-x86_64 qemu-system-x86
need debootstrap        debootstrap
need mkfs.ext4          e2fsprogs
need apt-get            apt
need apt-cache          apt
need dpkg-deb           dpkg
need chroot             coreutils
need flock              util-linux
need node               "nodejs (a glibc-based build: test/run.sh puts the project's .cache/node first on PATH)"
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing host packages: $(printf '%s; ' "${missing[@]}")install them with apt-get install"
fi
# mkfs.ext4 -d (populate from a directory) exists since e2fsprogs 1.43; bookworm has 1.47.
[[ $(mkfs.ext4 2>&1 || true) == *'-d root-directory'* ]] || die "mkfs.ext4 has no -d option: e2fsprogs >= 1.43 needed"
HOST_NODE=$(readlink -f -- "$(command -v node)")

mkdir -p "$CACHE"

# ---------------------------------------------------------------------------------------------
# Kernel version and cache key
# ---------------------------------------------------------------------------------------------
SCRIPT_HASH=$(sha256sum -- "$SELF" | cut -c1-16)
# "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)" of the meta package's candidate.
read -r KPKG KPKG_VERSION < <(apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null |
  awk '/^Depends:/ { for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-/) {
         v = ""; if ($(i + 1) == "(=") { v = $(i + 2); sub(/\).*/, "", v) }
         print $i, v; exit } }') || true
if [[ -n ${KPKG:-} && ${KPKG_VERSION:-} == '' ]]; then
  KPKG_VERSION=$(apt-cache show --no-all-versions "$KPKG" | awk '/^Version:/ {print $2; exit}')
fi
if [[ -z ${KPKG:-} || -z ${KPKG_VERSION:-} ]]; then
  # No apt lists (never updated, or cleaned): a warm cache built by this very script still
  # works offline; only a cold build needs apt.
  for f in "$CACHE"/nfs-guest-*/recipe; do
    [[ -f $f ]] || continue
    if grep -qx "script=$SCRIPT_HASH" "$f"; then
      KPKG=$(awk -F= '$1 == "kernel_pkg" {print $2}' "$f")
      KPKG_VERSION=$(awk -F= '$1 == "kernel_version" {print $2}' "$f")
      log "warning: apt knows no $KERNEL_META (run apt-get update); using the cached $KPKG $KPKG_VERSION"
      break
    fi
  done
  [[ -n ${KPKG:-} ]] || die "apt knows no $KERNEL_META: run apt-get update first"
fi
KREL=${KPKG#linux-image-}                                 # e.g. 6.1.0-56-cloud-amd64
KEY=$(printf '%s\n' "script=$SCRIPT_HASH" "kernel=$KPKG=$KPKG_VERSION" | sha256sum | cut -c1-12)
GUEST=$CACHE/nfs-guest-$KEY

# One cold build at a time; runs hold the lock shared while they read the cache, so that a
# build of another key (an edited script) does not delete the tree under them.
exec 9>"$CACHE/.nfs-guest.lock"
flock -s 9

# ---------------------------------------------------------------------------------------------
# 1. Cold build (cached): kernel, Debian root with the NFS server, initramfs
# ---------------------------------------------------------------------------------------------
build_guest() {
  log "building the guest for $KPKG $KPKG_VERSION into $GUEST"
  local t tmp root mirror
  t=$(now_ms)
  # Leftovers of a build killed hard; we hold the lock exclusively, so nobody uses them.
  for old in "$CACHE"/.nfs-guest-*.tmp.*; do
    if [[ -e $old ]]; then log "removing leftover $old"; rm_tree "$old"; fi
  done
  # Built next to its final place and renamed at the end: the cache entry is whole or absent.
  tmp=$(mktemp -d "$CACHE/.nfs-guest-$KEY.tmp.XXXXXX")
  TMP_DIRS+=("$tmp")
  root=$tmp/root

  phase "kernel ($KPKG)"
  mkdir -p "$tmp/deb"
  # APT::Sandbox::User=root: the _apt user could not write into our root-owned temp dir.
  (cd "$tmp/deb" && apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KPKG_VERSION" >/dev/null) \
    || die "apt-get download $KPKG=$KPKG_VERSION failed (apt-get update, or network?)"
  dpkg-deb -x "$tmp"/deb/*.deb "$tmp/kernel"
  [[ -f $tmp/kernel/boot/vmlinuz-$KREL && -d $tmp/kernel/lib/modules/$KREL ]] \
    || die "$KPKG has no boot/vmlinuz-$KREL or lib/modules/$KREL"
  cp "$tmp/kernel/boot/vmlinuz-$KREL" "$tmp/vmlinuz"

  phase "root (debootstrap)"
  mirror=$(debian_mirror) || die "found no '$SUITE' archive in apt's sources; set DEBIAN_MIRROR=URL"
  log "Debian mirror (from apt's configuration): $mirror"
  mkdir -p "$root"
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
  umount_under "$root"

  phase "root (apt packages)"
  # No service may start in the chroot while packages are installed.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  {
    chroot "$root" "${CHROOT_ENV[@]}" apt-get update -q &&
    chroot "$root" "${CHROOT_ENV[@]}" apt-get install -q -y --no-install-recommends "${GUEST_PACKAGES[@]}" &&
    chroot "$root" "${CHROOT_ENV[@]}" apt-get clean
  } >"$tmp/apt.log" 2>&1 || { tail -30 "$tmp/apt.log" >&2; die "apt-get in the guest root failed"; }
  rm -f "$root/usr/sbin/policy-rc.d"

  phase "root (modules, config)"
  # /lib is a symlink to usr/lib in bookworm (merged /usr); cp follows it inside $root.
  mkdir -p "$root/lib/modules"
  cp -a "$tmp/kernel/lib/modules/$KREL" "$root/lib/modules/"
  chroot "$root" "${CHROOT_ENV[@]}" depmod "$KREL"
  # Nothing reads docs, man pages, translations or apt's indexes in the guest.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
         "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
  find "$root/var/log" -type f -delete
  # debootstrap copied the build host's name and resolver: the guest has no network at all.
  printf 'ossnas-nfs\n' >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost ossnas-nfs\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  : >"$root/etc/resolv.conf"
  # Mount points the guest init and COMMAND use. The guest init mounts the fstab entries with
  # two `mount -a` (each exec costs ~0.1 s under TCG), the second once the modules are loaded.
  mkdir -p "$root/srv/nfs" "$root/ossnas" "$root/mnt"
  cat >"$root/etc/fstab" <<'FSTAB'
# written by scripts/nfs-guest.sh; / is /dev/vda, mounted by the initramfs with devtmpfs at /dev
sysfs       /sys             sysfs       nosuid,nodev,noexec          0 0
devpts      /dev/pts         devpts      gid=5,mode=620,ptmxmode=666  0 0
tmpfs       /dev/shm         tmpfs       mode=1777,nosuid,nodev       0 0
tmpfs       /run             tmpfs       mode=755,nosuid,nodev        0 0
nfsd        /proc/fs/nfsd    nfsd        defaults                     0 0
rpc_pipefs  /run/rpc_pipefs  rpc_pipefs  defaults                     0 0
cgroup2     /sys/fs/cgroup   cgroup2     nosuid,nodev,noexec          0 0
FSTAB

  phase "initramfs"
  build_initramfs "$root" "$tmp/initrd.cpio"

  rm_tree "$tmp/kernel"; rm -rf "$tmp/deb"
  printf '%s\n' "script=$SCRIPT_HASH" "kernel_pkg=$KPKG" "kernel_version=$KPKG_VERSION" \
    "kernel_release=$KREL" "built=$(date -u +%FT%TZ)" >"$tmp/recipe"
  mv -T -- "$tmp" "$GUEST"
  phase ""
  # Older trees (other keys: an edited script, an older kernel) are dead weight now. We hold
  # the lock exclusively: no run is reading them.
  for old in "$CACHE"/nfs-guest-*; do
    if [[ -d $old && $old != "$GUEST" ]]; then log "removing old cached guest $old"; rm_tree "$old"; fi
  done
  log "cold build phase times:"
  for line in "${TIMES[@]}"; do log "  $line"; done
  log "  cold build total             $(secs "$(now_ms) - t") s   ($(du -sh "$GUEST" | cut -f1))"
  TIMES=()
}

# build_initramfs ROOT OUT: a busybox initramfs whose only job is to load virtio_blk (a module
# in Debian's kernels), mount /dev/vda and switch_root to the guest init.
build_initramfs() {
  local root=$1 out=$2 dir mods=() m line deps i
  dir=$(mktemp -d "$CACHE/.nfs-guest-$KEY.tmp.initramfs.XXXXXX")
  TMP_DIRS+=("$dir")
  mkdir -p "$dir"/{bin,dev,proc,sys,newroot,modules}
  cp "$root/bin/busybox" "$dir/bin/busybox"
  mknod -m 600 "$dir/dev/console" c 5 1                 # the kernel opens it for /init's stdio
  # Load order from modules.dep, dependencies first (each line lists the closure, the deepest
  # last). The PCI transport and the block driver; virtio-rng too, so the guest never waits
  # for entropy.
  for m in virtio_pci virtio_blk virtio-rng; do
    line=$(grep -E "(^|/)$m\.ko:" "$root/lib/modules/$KREL/modules.dep") || die "no module $m in $KREL"
    read -r -a deps <<<"${line#*:}"
    for (( i = ${#deps[@]} - 1; i >= 0; i-- )); do mods+=("${deps[i]}"); done
    mods+=("${line%%:*}")
  done
  : >"$dir/modules/order"
  for m in "${mods[@]}"; do
    [[ -e $dir/modules/${m##*/} ]] && continue
    cp "$root/lib/modules/$KREL/$m" "$dir/modules/"
    printf '%s\n' "${m##*/}" >>"$dir/modules/order"
  done
  cat >"$dir/init" <<'EOF'
#!/bin/busybox sh
# initramfs /init (written by scripts/nfs-guest.sh): load the virtio block driver, mount the
# root image, and hand over to the init named by init= on the kernel command line.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# devtmpfs has no /dev/fd (bash's process substitution and many scripts need it) nor the
# devpts and shm mount points; made here, where an applet costs less than a dynamic binary.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm
fail() {
  echo "@@ossnas-guest initramfs error: $*"
  cat /proc/partitions
  poweroff -f
}
while read -r m; do insmod "/modules/$m" || fail "insmod $m"; done </modules/order
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -le 100 ] || fail "no /dev/vda after 10 s"; sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case $arg in init=*) init=${arg#init=} ;; esac
done
[ -x "/newroot$init" ] || fail "no $init in the root image"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
EOF
  chmod 755 "$dir/init"
  (cd "$dir" && find . -mindepth 1 | "$root/bin/busybox" cpio -o -H newc -R 0:0 >"$out" 2>/dev/null)
  [[ -s $out ]] || die "could not write the initramfs"
}

if [[ ! -f $GUEST/recipe ]]; then
  # Shared -> exclusive is not atomic with flock: whoever gets the lock first builds, the
  # others find the tree there afterwards.
  flock -u 9; flock -x 9
  if [[ ! -f $GUEST/recipe ]]; then build_guest; fi
  flock -u 9; flock -s 9
  [[ -f $GUEST/recipe ]] || die "the cached guest $GUEST vanished (another version of this script running?)"
fi

# ---------------------------------------------------------------------------------------------
# 2. Per run: a fresh ext4 image of the cached root + node + the repo + the guest's scripts
# ---------------------------------------------------------------------------------------------
RUN_T0=$(now_ms)
# Leftover run dirs of killed runs (their pid is in the name and is gone).
for old in "$CACHE"/.nfs-guest-run.*; do
  [[ -d $old ]] || continue
  pid=${old#"$CACHE"/.nfs-guest-run.}; pid=${pid%%.*}
  if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then rm_tree "$old"; fi
done
RUN=$(mktemp -d "$CACHE/.nfs-guest-run.$$.XXXXXX")
TMP_DIRS+=("$RUN")
STAGE=$RUN/root
link_tree "$GUEST/root" "$STAGE"
link_tree "$GUEST/vmlinuz" "$GUEST/initrd.cpio" "$RUN/"

# The repo, at /ossnas.
( cd "$REPO"
  shopt -s nullglob
  entries=()
  for pattern in "${REPO_ENTRIES[@]}"; do
    for e in $pattern; do if [[ -e $e ]]; then entries+=("$e"); fi; done
  done
  link_tree "${entries[@]}" "$STAGE/ossnas/" )
# The plugin bundle, at /ossnas-bundle.
if [[ -n ${NFS_GUEST_BUNDLE:-} ]]; then
  mkdir -p "$STAGE/ossnas-bundle"
  link_tree "$NFS_GUEST_BUNDLE/config.json" "$NFS_GUEST_BUNDLE/rootfs" "$STAGE/ossnas-bundle/"
fi
# The host's node: new file in a fresh directory of the staging tree, so nothing in the cache
# changes. Checked against the guest's libraries right away, where a failure is easy to read.
mkdir -p "$STAGE/usr/local/bin"
link_tree "$HOST_NODE" "$STAGE/usr/local/bin/node"
NODE_VERSION=$(chroot "$STAGE" /usr/local/bin/node --version 2>&1) \
  || die "the host's node ($HOST_NODE) does not run on the guest's Debian $SUITE libraries: $NODE_VERSION"

# What to run, NUL-separated (any argument survives as is), and the environment passed on.
mkdir -p "$STAGE/etc/ossnas-guest"
printf '%s\0' "$@" >"$STAGE/etc/ossnas-guest/argv"
: >"$STAGE/etc/ossnas-guest/env"
for name in ${CI+CI} ${NFS_GUEST_ENV:-}; do
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "NFS_GUEST_ENV: '$name' is not a variable name"
  if [[ -n ${!name+set} ]]; then printf '%s=%s\0' "$name" "${!name}" >>"$STAGE/etc/ossnas-guest/env"; fi
done
# Markers framing COMMAND's output on the console; the nonce keeps a command from producing
# them by chance (or on purpose).
NONCE=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$NONCE" >"$STAGE/etc/ossnas-guest/nonce"

# The guest's init (bash: mapfile -d '' reads the NUL-separated argv).
rm -f "$STAGE$GUEST_INIT" "$STAGE/usr/local/sbin/ossnas-nfsd"   # never write through a link
cat >"$STAGE$GUEST_INIT" <<'EOF'
#!/bin/bash
# The nfs-guest VM's init (written by scripts/nfs-guest.sh; init= on the kernel command line):
# set up the system and the NFS server on loopback, run the command from
# /etc/ossnas-guest/argv, report its exit code on the console, power off.
set -u
# PID 1 must reap every orphan (the NFS daemons double-fork) and must never exit: that is
# tini's whole job, so tini is PID 1 and runs this script as its only child, an ordinary
# process whose job table holds only its own children.
if [[ $$ == 1 ]]; then exec /usr/bin/tini -- "$0" "$@"; fi
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8
NONCE=$(</etc/ossnas-guest/nonce)

# Every exec of a dynamic binary costs ~0.1 s under TCG: few of them, and the slow module
# loading runs in parallel with the daemons that do not need it.
# /dev is the initramfs' devtmpfs; /etc/fstab has /sys, /dev/pts, /dev/shm, /run and the
# cgroup2 hierarchy at /sys/fs/cgroup (the only one: cgroup_no_v1=all).
mount -t proc proc /proc
mount -a -t sysfs,devpts,tmpfs
mount -a -t cgroup2
mkdir -p /run/lock /run/rpcbind /run/rpc_pipefs /run/sendsigs.omit.d
exec </dev/null >/dev/console 2>&1
# The console is a serial TTY: no CR added to the output, so the host sees exact lines.
stty -F /dev/console -onlcr 2>/dev/null
# NFS_GUEST_VERBOSE=1 on the host: trace this script with timestamps (bash 5, no fork per line).
if [[ " $(</proc/cmdline) " == *" ossnas.trace "* ]]; then PS4='+ ${EPOCHREALTIME} '; set -x; fi

die_guest() {
  echo "@@ossnas-guest setup error: $*"
  echo "@@ossnas-guest end $NONCE 125"
  stty -F /dev/console -onlcr 2>/dev/null   # tcsetattr(TCSADRAIN): waits for the UART to drain
  busybox poweroff -f
  sleep 5
}
# If this script ends, tini (PID 1) ends and the kernel panics: whatever goes wrong here ends
# in a power-off with a clear message instead.
trap 'die_guest "the guest init exited unexpectedly"' EXIT

modprobe -a nfs nfsv3 nfsv4 nfsd &
modprobe_pid=$!
ip link set lo up || die_guest "ip link set lo up"
hostname -F /etc/hostname

mkdir -p /srv/nfs
echo 'hello from nfs' >/srv/nfs/hello.txt
# No fsid=0: nfsd then builds the NFSv4 pseudo-root itself, so v4 clients mount the same
# path (127.0.0.1:/srv/nfs) as v3 clients.
echo '/srv/nfs 127.0.0.1(rw,sync,no_subtree_check,no_root_squash,insecure)' >/etc/exports

rpcbind || die_guest "rpcbind"
# statd: NLM locking for v3 mounts without nolock (client and server side).
rpc.statd --no-notify || die_guest "rpc.statd"
wait "$modprobe_pid" || die_guest "modprobe nfs nfsv3 nfsv4 nfsd"
mount -a -t nfsd,rpc_pipefs || die_guest "mount /proc/fs/nfsd and /run/rpc_pipefs"
ossnas-nfsd start || die_guest "ossnas-nfsd start"

mapfile -d '' -t ARGV </etc/ossnas-guest/argv
mapfile -d '' -t EXTRA_ENV </etc/ossnas-guest/env
cd /ossnas || die_guest "no /ossnas"
read -r up _ </proc/uptime
echo "@@ossnas-guest start $NONCE $up"
# stdout is a pipe, not the console TTY, as in CI (node's test runner then reports in TAP, with
# no colours). A FIFO and a cat we do not simply wait for: a background process the command
# left behind could hold the pipe open forever, so it gets 5 s to drain after the command ends.
mkfifo /run/ossnas-guest-output
cat /run/ossnas-guest-output &
cat_pid=$!
env -i PATH="$PATH" HOME=/root USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "${EXTRA_ENV[@]}" \
    "${ARGV[@]}" </dev/null >/run/ossnas-guest-output 2>&1
rc=$?
# Not a `( sleep 5; kill ) &` subshell that we kill when cat is done early: a bash subshell
# signalled right after the fork still has this script's EXIT trap, and ran die_guest.
timeout 5 tail -s 0.1 --pid="$cat_pid" -f /dev/null
kill "$cat_pid" 2>/dev/null
wait "$cat_pid" 2>/dev/null
# Only the root filesystem: a plain sync would also flush NFS mounts, and hang for good if the
# command left one whose server it stopped. (The image is thrown away anyway.)
sync -f /
read -r up _ </proc/uptime
trap - EXIT
echo "@@ossnas-guest end $NONCE $rc $up"
stty -F /dev/console -onlcr 2>/dev/null   # drain the UART before the power goes
busybox poweroff -f
echo o >/proc/sysrq-trigger
EOF

# The helper tests use to take the server away and bring it back.
cat >"$STAGE/usr/local/sbin/ossnas-nfsd" <<'EOF'
#!/bin/bash
# ossnas-nfsd start|stop|status (written by scripts/nfs-guest.sh): start or stop serving NFS
# (v3, v4.0, v4.1, v4.2) from this guest. `stop` takes nfsd to 0 threads: its sockets close,
# so connections to port 2049 are refused (as from a NAS that went away); `start` serves the
# same exports again. rpcbind, statd and mountd keep running across stop/start.
set -euo pipefail
case ${1:-} in
  start)
    # Short grace periods: after a start, nfsd refuses new v4 opens, and lockd new NLM (v3)
    # locks, for a grace period in which clients can reclaim their state. v4: 10 s, the least
    # nfsd takes, and skipped when nfsdcld knows no client to reclaim. NLM: always (even at
    # boot), roundup(nlm_grace_period, nlm_timeout) s, so 3 s (default 10 s: the first v3 lock
    # would wait 10 s). Only taken while nfsd and lockd are down, so set before each start.
    if [[ $(</proc/fs/nfsd/threads) == 0 ]]; then
      echo 10 >/proc/fs/nfsd/nfsv4gracetime
      echo 3 >/proc/sys/fs/nfs/nlm_timeout
      echo 3 >/proc/sys/fs/nfs/nlm_grace_period
    fi
    exportfs -ra
    pgrep -x rpc.mountd >/dev/null || rpc.mountd
    # nfsdcld tracks v4 clients; with it nfsd skips the grace period entirely when no client
    # has state to reclaim (a fresh boot, or nobody mounted before the stop).
    if ! pgrep -x nfsdcld >/dev/null; then
      nfsdcld
      # nfsd gives nfsdcld 1 s to open its pipe, and falls back (with a full grace period) if
      # not: wait until nfsdcld watches rpc_pipefs (its inotify fd), which takes longer than
      # that under TCG.
      pid=$(pgrep -x nfsdcld) || pid=0               # gone: nfsd falls back, with a grace period
      for _ in $(seq 50); do
        [[ $(ls -l "/proc/$pid/fd" 2>/dev/null) == *anon_inode:inotify* ]] && break
        sleep 0.1
      done
    fi
    rpc.nfsd -V 3 -V 4 -V 4.1 -V 4.2 8
    ;;
  stop)
    rpc.nfsd 0
    ;;
  status)
    echo "threads: $(cat /proc/fs/nfsd/threads)"
    echo "versions: $(cat /proc/fs/nfsd/versions 2>/dev/null)"
    ;;
  *)
    echo "usage: ossnas-nfsd start|stop|status" >&2
    exit 2
    ;;
esac
EOF
chmod 755 "$STAGE$GUEST_INIT" "$STAGE/usr/local/sbin/ossnas-nfsd"

# The image: what the tree holds plus 2 GiB of room for COMMAND's files (sparse, so the room
# costs nothing on the host). No journal: the image lives for one run, and mkfs is faster.
IMG=$RUN/disk.img
size_k=$(du -sk "$STAGE" | cut -f1)
truncate -s "$(( size_k + 2 * 1024 * 1024 ))K" "$IMG"
mkfs.ext4 -q -F -O ^has_journal -m 0 -L ossnas-guest -E root_owner=0:0 -d "$STAGE" "$IMG" \
  || die "mkfs.ext4 -d failed"
rm_tree "$STAGE"
flock -u 9                                             # done reading the cache
IMAGE_MS=$(( $(now_ms) - RUN_T0 ))
log "image ready in $(secs IMAGE_MS) s ($(( size_k / 1024 )) MiB of files; node $NODE_VERSION); booting $KREL under qemu ($ACCEL)"

# ---------------------------------------------------------------------------------------------
# 3. Boot, stream COMMAND's output, exit with its code
# ---------------------------------------------------------------------------------------------
CONSOLE=$RUN/console.log
: >"$CONSOLE"
# softlockup_panic: a guest whose CPUs spin in the kernel for good (seen once under TCG, in
# `docker plugin create`: both vCPUs stuck for 400 s and counting) panics, and panic=-1 ends qemu
# at once, instead of idling until NFS_GUEST_TIMEOUT. watchdog_thresh=60 makes that 120 s in the
# kernel without a reschedule (the default 20 s is reached by a host that merely starves qemu).
CMDLINE="console=ttyS0 panic=-1 init=$GUEST_INIT cgroup_no_v1=all softlockup_panic=1 watchdog_thresh=60 ${NFS_GUEST_CMDLINE:-}"
if [[ $VERBOSE == 1 ]]; then CMDLINE+=" loglevel=7 ossnas.trace"; else CMDLINE+=" quiet loglevel=3"; fi
QEMU_T0=$(now_ms)
# timeout(1) is the watchdog: it stops qemu (TERM, then KILL) and exits 124. (Not a sleeping
# subshell killed at the end: a bash subshell signalled right after its fork runs our EXIT trap.)
# -nodefaults: no VGA, no NIC (everything is on the guest's loopback), no default serial. The
# serial console goes to a file and is followed from there: qemu's stdio backend would put a
# terminal into raw mode. -no-reboot: the guest's poweroff (or a panic, with panic=-1) ends qemu.
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -nodefaults -no-user-config -no-reboot \
  -machine pc -accel "$ACCEL" -cpu max -smp 2 -m 2048 \
  -display none -monitor none -serial "file:$CONSOLE" \
  -kernel "$RUN/vmlinuz" -initrd "$RUN/initrd.cpio" -append "$CMDLINE" \
  -drive "file=$IMG,format=raw,if=virtio,cache=unsafe" \
  -device virtio-rng-pci \
  </dev/null >"$RUN/qemu.log" 2>&1 &
QEMU_PID=$!                                            # timeout's, which passes signals on

# Follow the console until the end marker (or until qemu exits). Before the start marker the
# lines are boot noise: kept in the log, shown only with NFS_GUEST_VERBOSE=1. The end marker may
# follow output that had no final newline, on the same line.
RESULT=$RUN/result
tail -n +1 -F -s 0.2 --pid="$QEMU_PID" "$CONSOLE" 2>/dev/null | awk \
  -v nonce="$NONCE" -v verbose="$VERBOSE" -v result="$RESULT" '
  BEGIN { start = "@@ossnas-guest start " nonce; end = "@@ossnas-guest end " nonce " " }
  { sub(/\r$/, "") }
  (i = index($0, end)) > 0 {               # also before the start marker: a setup error
    if (i > 1) print substr($0, 1, i - 1)
    split(substr($0, i + length(end)), f, " ")
    print "code=" f[1] > result; print "end_uptime=" f[2] > result; close(result)
    fflush(); exit
  }
  !started {
    if (index($0, start) == 1) {
      started = 1; split($0, f, " "); print "boot_uptime=" f[4] > result; fflush(result); next
    }
    if (verbose == 1 || $0 ~ /^@@ossnas-guest /) { print > "/dev/stderr"; fflush("/dev/stderr") }
    next
  }
  { print; fflush() }
' &
# In the background and waited for: bash runs the INT/TERM traps (cleanup: stop qemu) only once
# a foreground command ends, but interrupts `wait` at once.
READER_PID=$!
wait "$READER_PID" || true
READER_PID=''

# The end marker is out: qemu should be powering off. Give it a moment, then make sure.
for _ in $(seq 100); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$QEMU_PID" 2>/dev/null; then kill "$QEMU_PID" 2>/dev/null || true; fi
QEMU_RC=0; wait "$QEMU_PID" 2>/dev/null || QEMU_RC=$?; QEMU_PID=''
END_MS=$(now_ms)
cp "$CONSOLE" "$CACHE/nfs-guest-last-console.log" 2>/dev/null || true

code=$(awk -F= '$1 == "code" {print $2}' "$RESULT" 2>/dev/null || true)
if [[ ! $code =~ ^[0-9]+$ ]]; then
  if [[ $QEMU_RC == 124 ]]; then
    log "error: timed out after ${TIMEOUT} s (NFS_GUEST_TIMEOUT) before the command finished; qemu killed"
  else
    log "error: the guest stopped (qemu exit $QEMU_RC) before reporting the command's exit code"
  fi
  [[ -s $RUN/qemu.log ]] && { log "qemu said:"; sed 's/^/  /' "$RUN/qemu.log" >&2; }
  log "last console lines (whole log: $CACHE/nfs-guest-last-console.log):"
  tail -n 40 "$CONSOLE" | tr -d '\r' | sed 's/^/  /' >&2
  if [[ $QEMU_RC == 124 ]]; then exit 124; fi
  exit 125
fi
boot=$(awk -F= '$1 == "boot_uptime" {print $2}' "$RESULT")
endu=$(awk -F= '$1 == "end_uptime" {print $2}' "$RESULT")
if [[ -z $boot ]]; then
  # The end marker without a start marker: the guest's setup failed (its message is above).
  log "error: the guest failed before running the command (exit $code); whole console: $CACHE/nfs-guest-last-console.log"
  exit "$code"
fi
log "$(printf 'exit %s; image %s s, guest boot to command %s s (kernel uptime), command %s s, qemu %s s, total %s s' \
  "$code" "$(secs IMAGE_MS)" "$boot" "$(awk -v a="$boot" -v b="$endu" 'BEGIN { printf "%.1f", b - a }')" \
  "$(secs "END_MS - QEMU_T0")" "$(secs "END_MS - SCRIPT_T0")")"
exit "$code"
