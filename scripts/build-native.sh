#!/usr/bin/env bash
# Builds the spawn helper (native/ossnas-spawn.c, see src/host/spawner.ts) into
# native/ossnas-spawn. Static, so that the one binary runs both on the build host (the tests run
# the plugin as a host process) and in the plugin's rootfs, whatever C library each has.
# Run by `npm run build` (postbuild); does nothing when the binary is newer than its source.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
src=native/ossnas-spawn.c
out=native/ossnas-spawn
[[ -x $out && $out -nt $src ]] && exit 0
command -v cc >/dev/null 2>&1 || { echo "build-native: no C compiler: install gcc and libc6-dev (Debian), then build again" >&2; exit 1; }
cc -O2 -Wall -Wextra -Werror -static -o "$out.tmp" "$src"
mv "$out.tmp" "$out"
