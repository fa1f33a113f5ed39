// Where a FUSE client is moved so that it outlives the plugin: paths only (the move itself is
// exercised against a real dockerd in test/e2e/restart.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLIENT_CGROUP, hierarchyMount, parseProcCgroup, siblingDir } from '../../src/host/cgroups.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';

// A cgroup v1 host with a v2 hierarchy beside it, as on our machines; the plugin's cgroup is
// /<id> in most hierarchies but nested in memory.
const ID = '2f114250e869';
const procCgroup = `9:name=systemd:/${ID}
4:memory:/outer/${ID}
2:cpu,cpuacct:/${ID}
1:cpuset:/
0::/${ID}
`;
const hostMounts = parseMountinfo(`30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`);

describe('cgroups: the sibling a FUSE client moves to', () => {
  const dirs = () =>
    parseProcCgroup(procCgroup).map((m) => siblingDir(m, hierarchyMount(m, hostMounts), '/proc/1/root'));

  it('is beside the plugin cgroup in every hierarchy, under the host root', () => {
    assert.deepEqual(dirs(), [
      `/proc/1/root/sys/fs/cgroup/systemd/${CLIENT_CGROUP}`,
      `/proc/1/root/sys/fs/cgroup/memory/outer/${CLIENT_CGROUP}`,
      `/proc/1/root/sys/fs/cgroup/cpu,cpuacct/${CLIENT_CGROUP}`,
      undefined, // already at the root: nothing to leave
      `/proc/1/root/sys/fs/cgroup/unified/${CLIENT_CGROUP}`,
    ]);
  });

  it('accounts for a hierarchy mounted from a sub-directory, and skips one the host does not mount', () => {
    const [m] = parseProcCgroup(`4:memory:/outer/${ID}\n`);
    const nested = parseMountinfo('34 30 0:31 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n');
    assert.equal(siblingDir(m!, hierarchyMount(m!, nested), '/r'), `/r/sys/fs/cgroup/memory/${CLIENT_CGROUP}`);
    const [p] = parseProcCgroup(`8:pids:/${ID}\n`);
    assert.equal(siblingDir(p!, hierarchyMount(p!, hostMounts), '/r'), undefined);
  });

  it('parses a v2-only host', () => {
    const [m] = parseProcCgroup('0::/system.slice/docker-abc.scope\n');
    const mounts = parseMountinfo('30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n');
    assert.equal(siblingDir(m!, hierarchyMount(m!, mounts), ''), `/sys/fs/cgroup/system.slice/${CLIENT_CGROUP}`);
  });
});
