import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { createServer } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parseVolumeOptions, createBackends } from '../../src/backends/index.js';
import { mountFailure, requireNfsSupport } from '../../src/backends/nas/index.js';
import { DEFAULT_NFS_OPTIONS, fromSpec, nfsMountArgs, nfsPort, nfsSource, toSpec } from '../../src/backends/nas/options.js';
import type { HostNamespace } from '../../src/host/hostns.js';
import { probeTcp, resolveHost } from '../../src/host/net.js';
import { tempDir } from '../helpers/env.js';

const nas = (o: Record<string, string>) => toSpec({ type: 'nas', server: 'nas.example.com', ...o });

describe('nas options', () => {
  it('default to v3 with the CSI driver options, and v4 with noresvport', () => {
    const v3 = nas({});
    assert.deepEqual([v3.vers, v3.path, v3.readonly, v3.options], ['3', '/', false, [...DEFAULT_NFS_OPTIONS['3']]]);
    assert.equal(v3.options.join(','), 'nolock,proto=tcp,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport');
    assert.deepEqual(nas({ vers: '4' }).vers, '4.0', "'4' means 4.0");
    assert.deepEqual(nas({ vers: '4.1' }).options, ['noresvport']);
    assert.deepEqual(nas({ vers: '4.0', options: 'none' }).options, [], 'none means no defaults');
    assert.deepEqual(nas({ options: 'Hard, timeo=100,nconnect=4' }).options, ['hard', 'timeo=100', 'nconnect=4']);
  });

  it('normalise so that one volume written two ways compares equal', () => {
    assert.deepEqual(
      fromSpec(nas({ path: 'share/a/' })),
      fromSpec(toSpec({ TYPE: 'nas', Server: 'NAS.example.com.', PATH: '/share//a', vers: '3', read_only: 'no' })),
    );
    assert.equal(nas({ mode: '755' }).mode, '0755');
    assert.equal(fromSpec(nas({ options: 'none' })).options, 'none');
  });

  it('refuse bad values by name', () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ server: 'nas.example.com:/share' }, /invalid option 'server':.*'path' option/],
      [{ server: 'bad host' }, /invalid option 'server': expected a host name/],
      [{ vers: '2' }, /invalid option 'vers': expected 3, 4.0 or 4.1/],
      [{ path: '/a/../etc' }, /invalid option 'path':.*'\.\.'/],
      [{ options: 'vers=4' }, /invalid option 'options': 'vers' is not accepted here: use the 'vers' option/],
      [{ options: 'hard,addr=10.0.0.9' }, /'addr' is not accepted here/],
      [{ options: 'ro' }, /use the 'readonly' option/],
      [{ options: 'bg' }, /mounts in the foreground/],
      [{ options: 'context=system_u' }, /'context' is not an NFS option ossnas accepts/],
      [{ options: 'timeo=6x' }, /'timeo' needs a value/],
      [{ options: 'hard=1' }, /'hard' takes no value/],
      [{ options: 'hard,hard' }, /'hard' is given twice/],
      [{ options: ',' }, /or 'none'/],
      [{ mode: '999' }, /invalid option 'mode': expected an octal mode/],
      [{ mode: '0755', readonly: 'true' }, /'mode' cannot be applied to a readonly volume/],
      [{ readonly: 'maybe' }, /invalid option 'readonly'/],
      [{ bucket: 'b' }, /unknown option 'bucket' for type=nas; accepted options: type, server, path/],
    ];
    assert.throws(() => toSpec({ type: 'nas' }), /^Error: option 'server' is required: the NFS server, a host name or IP address \(the export path goes in path\)$/);
    for (const [opts, re] of bad) assert.throws(() => toSpec({ type: 'nas', server: 'nas.example.com', ...opts }), re, JSON.stringify(opts));
  });

  it('are reached through type=nas', () => {
    const { backend, options } = parseVolumeOptions(createBackends(), { type: 'NAS', server: '10.0.0.5', vers: '4' });
    assert.equal(backend.type, 'nas');
    assert.deepEqual(options, { type: 'nas', server: '10.0.0.5', path: '/', vers: '4.0', options: 'noresvport', readonly: 'false' });
  });
});

describe('nas mount arguments', () => {
  it('are exact for each version, with the resolved address and no mount helper', () => {
    assert.deepEqual(nfsMountArgs(nas({ path: '/share' }), '10.0.0.5', '/t'), [
      '-i', '-c', '-t', 'nfs', '-o',
      'vers=3,nolock,proto=tcp,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,rw,addr=10.0.0.5',
      'nas.example.com:/share', '/t',
    ]);
    assert.deepEqual(nfsMountArgs(nas({ vers: '4' }), '10.0.0.5', '/t'), [
      '-i', '-c', '-t', 'nfs4', '-o', 'vers=4.0,noresvport,rw,addr=10.0.0.5', 'nas.example.com:/', '/t',
    ]);
    assert.deepEqual(nfsMountArgs(nas({ vers: '4.1', options: 'none', readonly: 'true' }), '10.0.0.5', '/t', '/'), [
      '-i', '-c', '-t', 'nfs4', '-o', 'vers=4.1,ro,addr=10.0.0.5', 'nas.example.com:/', '/t',
    ]);
  });
  it('bracket IPv6 servers and use the port option for the probe', () => {
    const spec = toSpec({ type: 'nas', server: '[FD00::5]', path: '/x', options: 'port=12049' });
    assert.equal(spec.server, 'fd00::5');
    assert.equal(nfsSource(spec), '[fd00::5]:/x');
    assert.equal(nfsPort(spec), 12049);
    assert.equal(nfsPort(nas({})), 2049);
  });
});

describe('nas preconditions', () => {
  const here: HostNamespace = { pid: undefined, run: async () => '', hostPath: async (p) => p };

  it('accept a kernel that lists nfs or has the module, and name the kernel when it has neither', async () => {
    const t = await tempDir();
    try {
      const where = { filesystems: path.join(t.dir, 'filesystems'), hostRoot: path.join(t.dir, 'host') };
      await writeFile(where.filesystems, 'nodev\tsysfs\nnodev\tnfs\nnodev\tnfs4\n\text4\n');
      await requireNfsSupport(here, '3', where);
      await requireNfsSupport(here, '4.1', where);
      await writeFile(where.filesystems, 'nodev\tsysfs\n\text4\nfuseblk\n');
      await assert.rejects(requireNfsSupport(here, '3', where), /host kernel \(.+\) has no NFS support: 'nfs' is not in \/proc\/filesystems/);
      await assert.rejects(requireNfsSupport(here, '4.0', where), /'nfs4' is not in \/proc\/filesystems and no nfs module is installed/);
      const modules = path.join(where.hostRoot, 'lib/modules', os.release(), 'kernel/fs/nfs');
      await mkdir(modules, { recursive: true });
      await writeFile(path.join(modules, 'nfs.ko.xz'), '');
      await requireNfsSupport(here, '4.1', where); // the kernel loads it on the first mount
    } finally {
      await t.cleanup();
    }
  });

  it('probe TCP: an open port answers, a closed one is refused at once', async () => {
    const server = createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    await probeTcp('127.0.0.1', port, 2000);
    server.close();
    await new Promise((r) => server.once('close', r));
    const t0 = Date.now();
    await assert.rejects(probeTcp('127.0.0.1', port, 2000), /127\.0\.0\.1 port \d+ refused the connection/);
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(await resolveHost('10.1.2.3', 100), '10.1.2.3');
    await assert.rejects(resolveHost('no-such-host.invalid', 3000), /cannot resolve no-such-host\.invalid/);
  });
});

describe('NAS: mount failures in words a user can act on', () => {
  const spec = toSpec({ type: 'nas', server: 'filer.example', path: '/export', vers: '4.1' });
  const said = (text: string) => mountFailure(spec, '/export', new Error(text), 8000).message;

  it('names the cause from mount\'s own words, and keeps them', () => {
    assert.match(said('mount.nfs: requested NFS version or transport protocol is not supported'), /does not serve filer\.example:\/export over NFS v4\.1; try another 'vers'/);
    assert.match(said('mount(2): Protocol not supported'), /does not serve .* over NFS v4\.1/);
    assert.match(said('mount(2): No such file or directory'), /filer\.example:\/export does not exist on the server \(mount\(2\): No such file or directory\)/);
    assert.match(said('mount(2): Permission denied'), /refused filer\.example:\/export .* check that it exports the path to this host/);
    assert.match(said('mount: unknown filesystem type \'nfs4\''), /the host kernel cannot mount NFS v4\.1/);
  });

  it('does not blame the version for a message that merely mentions one', () => {
    assert.equal(
      said('mount(2): Connection reset by peer (server version 2.6)'),
      'mounting filer.example:/export (NFS v4.1) failed: mount(2): Connection reset by peer (server version 2.6)',
    );
  });
});
