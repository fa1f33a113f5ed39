# Shell helpers for building Debian trees with debootstrap, shared by rootfs.build.sh (the plugin
# rootfs) and scripts/nfs-guest.sh (the NFS test guest). Source it; it only defines functions.
# debian_mirror reads $SUITE and $DEBIAN_MIRROR.

# umount_under DIR: lazily unmount everything mounted below DIR, deepest first. Needed because
# debootstrap mounts /proc (and /sys) inside its target and, when interrupted, leaves them.
umount_under() {
  local dir mp
  dir=$(realpath -m -- "$1")
  # mountinfo field 5 is the mount point, with space, tab, newline and \ octal-escaped.
  awk '{print $5}' /proc/self/mountinfo | while read -r mp; do
    mp=$(printf '%b' "$mp")
    if [[ $mp == "$dir"/* ]]; then printf '%s\n' "$mp"; fi
  done | sort -r | while read -r mp; do umount -l -- "$mp" || true; done
  return 0
}

# rm_tree DIR: remove a (possibly half-built) rootfs. Unmount first; --one-file-system so that
# if anything is still mounted, rm stops at it instead of deleting through it (a bind-mounted
# host /dev or /sys inside a target would otherwise be wiped).
rm_tree() {
  umount_under "$1"
  rm -rf --one-file-system -- "$1"
}

# debian_mirror: print the URI apt uses for the main $SUITE archive (not -security, not
# -updates). Read at build time so no mirror host is ever written into the repo.
# Handles deb822 files (/etc/apt/sources.list.d/*.sources: Types/URIs/Suites stanzas) and
# one-line "deb [opts] URL suite components" files. mawk: no \s, so [[:space:]] everywhere.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then printf '%s\n' "$DEBIAN_MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk -v suite="$SUITE" '
      function has(list, word) { return (" " list " ") ~ ("[[:space:]]" word "[[:space:]]") }
      function flush() {
        if (!found && has(types, "deb") && has(suites, suite) && tolower(enabled) !~ /^no/ && uris != "") {
          split(uris, u, /[[:space:]]+/); print u[1]; found = 1
        }
        types = suites = uris = enabled = key = ""
      }
      /^#/                { next }
      /^[[:space:]]*$/    { flush(); next }
      /^[[:space:]]/      { if (key == "uris") uris = uris " " $0; else if (key == "suites") suites = suites " " $0; next }
      {
        key = tolower($0); sub(/:.*/, "", key)
        val = $0; sub(/^[^:]*:[[:space:]]*/, "", val); sub(/[[:space:]]+$/, "", val)
        if (key == "types") types = val; else if (key == "suites") suites = val
        else if (key == "uris") uris = val; else if (key == "enabled") enabled = val
      }
      END { flush() }' "$f")
    uri=${uri#"${uri%%[![:space:]]*}"}
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }   # skip [signed-by=...]
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done
  return 1
}
