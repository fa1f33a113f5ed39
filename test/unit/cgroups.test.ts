// Where a FUSE client is moved so that it outlives the plugin: paths only (the move itself is
// exercised against a real dockerd in test/e2e/restart.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLIENT_CGROUP, hierarchyMount, parseProcCgroup, siblingDir } from '../../src/host/cgroups.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { leftPluginCgroup } from '../helpers/docker.js';

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

  it('on a v2-only host with the cgroupfs driver: the plugin is /<id>, its sibling at the root', () => {
    const [m] = parseProcCgroup(`0::/${ID}\n`);
    const mounts = parseMountinfo('30 22 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n');
    assert.equal(siblingDir(m!, hierarchyMount(m!, mounts), '/proc/1/root'), `/proc/1/root/sys/fs/cgroup/${CLIENT_CGROUP}`);
  });

  it('takes the cgroup2 mount at /sys/fs/cgroup (or /sys/fs/cgroup/unified) when the host has more than one', () => {
    const [m] = parseProcCgroup(`0::/system.slice/${ID}\n`);
    const cilium = '25 22 0:40 / /run/cilium/cgroupv2 rw - cgroup2 none rw\n';
    const unified = parseMountinfo(`${cilium}30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n`);
    assert.equal(hierarchyMount(m!, unified)?.mountPoint, '/sys/fs/cgroup');
    const hybrid = parseMountinfo(`${cilium}40 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n`);
    assert.equal(hierarchyMount(m!, hybrid)?.mountPoint, '/sys/fs/cgroup/unified');
    assert.equal(hierarchyMount(m!, parseMountinfo(cilium))?.mountPoint, '/run/cilium/cgroupv2', 'the only one there is');
  });

  it('parses a v2-only host', () => {
    const [m] = parseProcCgroup('0::/system.slice/docker-abc.scope\n');
    const mounts = parseMountinfo('30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n');
    assert.equal(siblingDir(m!, hierarchyMount(m!, mounts), ''), `/sys/fs/cgroup/system.slice/${CLIENT_CGROUP}`);
  });
});

describe('the e2e check that a FUSE client left the plugin cgroup', () => {
  it('holds on v1 (every non-root hierarchy) and on v2 (the unified one), and only then', () => {
    assert.equal(leftPluginCgroup(`9:name=systemd:/${CLIENT_CGROUP}\n5:devices:/outer/${CLIENT_CGROUP}\n1:cpuset:/\n0::/\n`), true);
    assert.equal(leftPluginCgroup(`0::/${CLIENT_CGROUP}\n`), true);
    assert.equal(leftPluginCgroup(`0::/system.slice/${CLIENT_CGROUP}\n`), true);
    assert.equal(leftPluginCgroup(`0::/${ID}\n`), false, 'still in the plugin cgroup (v2)');
    assert.equal(leftPluginCgroup(`5:devices:/${CLIENT_CGROUP}\n4:memory:/${ID}\n`), false, 'one v1 hierarchy left behind');
    assert.equal(leftPluginCgroup('1:cpuset:/\n0::/\n'), false, 'nowhere but the roots');
  });
});
