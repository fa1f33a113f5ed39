#!/usr/bin/env bash
# The whole test suite on a fresh machine of our kind, as root: installs what it needs, starts
# dockerd (tests start their own S3 servers and registries), builds, and runs every level:
# unit, api, integration (real s3fs), e2e (real dockerd, the real plugin), and the benchmarks'
# short versions (bench/, so that they cannot rot).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

bash scripts/host-setup.sh
# The project's Node (.node-version, fetched by host-setup): the one the plugin's rootfs ships.
export PATH="$repo/.cache/node/bin:$PATH"
[ "$(node --version)" = "v$(tr -d ' \n' <.node-version)" ] || { echo "test/run.sh: node on PATH is $(node --version), not .node-version's" >&2; exit 1; }
# The CLI of the engine under test: a newer docker client earlier on PATH (some machines carry one
# in /usr/local/bin) talks to Debian's dockerd through an older API and formats some output
# differently, so Debian's own client is put first when Debian's engine is the one running.
if dpkg-query -W -f='${Status}' docker.io 2>/dev/null | grep -q 'install ok installed' && [ "$(command -v docker)" != /usr/bin/docker ]; then
  mkdir -p .cache/docker-cli && ln -sfn /usr/bin/docker .cache/docker-cli/docker
  export PATH="$repo/.cache/docker-cli:$PATH"
fi
npm run build
npm run typecheck

mkdir -p .cache
tap=.cache/test-results.tap
status=0
node --import tsx --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  test/unit/*.test.ts test/api/*.test.ts test/integration/*.test.ts test/e2e/*.test.ts test/bench/*.test.ts || status=$?

# One closing line, whatever the reporter printed.
pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" | tail -1)
echo "${pass:-0} passed, ${fail:-0} failed"
exit "$status"
