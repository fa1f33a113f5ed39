// What an operator watches, from the real program (dist/main.js) as a plain host process: one JSON
// log line per call, and the opt-in Prometheus listener (absent unless OSSNAS_METRICS_ADDRESS).
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { freePort, tempDir } from '../helpers/env.js';
import { scrapeMetrics } from '../helpers/metrics.js';
import { finishPlugin, startPlugin, startPluginInTempDir, type PluginProcess } from '../helpers/plugin-process.js';

const NAS = { type: 'nas', server: '127.0.0.1', path: '/export/a' };

/** The program's JSON log lines with a message, in order. */
function logLines(p: PluginProcess): Array<Record<string, unknown>> {
  return p
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** TCP ports the process listens on: its socket inodes that /proc/net/tcp* shows in state LISTEN. */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]!);
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of (await readFile(table, 'utf8')).split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

describe('logs', () => {
  const calls: Array<[string, Record<string, unknown>]> = [
    ['VolumeDriver.Capabilities', {}],
    ['VolumeDriver.Create', { Name: 'logged', Opts: NAS }],
    ['VolumeDriver.Get', { Name: 'logged' }],
    ['VolumeDriver.List', {}],
    ['VolumeDriver.Path', { Name: 'logged' }],
    ['VolumeDriver.Get', { Name: 'nobody-made-this' }],
    ['VolumeDriver.Create', { Name: 'bad', Opts: { type: 'nas', server: '127.0.0.1', colour: 'blue' } }],
  ];

  /** Makes `calls` and returns the call lines they wrote, once `expected` of them have arrived. */
  async function callLinesOf(p: PluginProcess, expected: number): Promise<Array<Record<string, unknown>>> {
    const before = logLines(p).length;
    for (const [call, body] of calls) await p.client.call(call, body);
    // pino writes synchronously, but the pipe to this process is read asynchronously. Wait for
    // the call lines themselves: other lines (a volume created, a warning) come in between, so a
    // count of all lines can be reached before the last call's line has arrived.
    const callLines = () => logLines(p).slice(before).filter((l) => 'call' in l);
    const deadline = Date.now() + 5000;
    while (callLines().length < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return callLines();
  }

  it('one line per call that changes something or fails, at info, with volume, duration and outcome; a failure at warn with the message', async (t) => {
    const p = await startPluginInTempDir({ LOG_LEVEL: 'info' });
    t.after(() => finishPlugin(p));
    const lines = await callLinesOf(p, 3);
    assert.deepEqual(
      lines.map((l) => [l.call, l.volume, l.status, l.level]),
      [
        ['VolumeDriver.Create', 'logged', 200, 30],
        // dockerd asks every driver about a volume it cannot place: not a warning.
        ['VolumeDriver.Get', 'nobody-made-this', 500, 30],
        ['VolumeDriver.Create', 'bad', 500, 40],
      ],
    );
    for (const l of lines) assert.ok(typeof l.ms === 'number' && l.ms >= 0 && l.ms < 5000, `ms in ${JSON.stringify(l)}`);
    assert.match(String(lines[1]!.err), /nobody-made-this/);
    assert.match(String(lines[2]!.err), /colour/, 'the failure line carries the message the caller got');
    assert.equal(lines[2]!.msg, 'call failed');
  });

  it('reads that succeed (Get, List, Path, Capabilities) at debug', async (t) => {
    const p = await startPluginInTempDir({ LOG_LEVEL: 'debug' });
    t.after(() => finishPlugin(p));
    const lines = await callLinesOf(p, calls.length);
    assert.deepEqual(
      lines.map((l) => [l.call, l.volume, l.status, l.level]),
      [
        ['VolumeDriver.Capabilities', undefined, 200, 20],
        ['VolumeDriver.Create', 'logged', 200, 30],
        ['VolumeDriver.Get', 'logged', 200, 20],
        ['VolumeDriver.List', undefined, 200, 20],
        ['VolumeDriver.Path', 'logged', 200, 20],
        ['VolumeDriver.Get', 'nobody-made-this', 500, 30],
        ['VolumeDriver.Create', 'bad', 500, 40],
      ],
    );
    for (const l of lines) assert.ok(typeof l.ms === 'number' && l.ms >= 0 && l.ms < 5000, `ms in ${JSON.stringify(l)}`);
  });
});

describe('metrics', () => {
  it('report what the restore after start did and how long it took', async (t) => {
    // A state that a crashed plugin left: one volume that a container holds. This host has no
    // NFS, so its repair fails, and is retried (later) with backoff.
    const { dir } = await tempDir();
    await mkdir(path.join(dir, 'state'), { recursive: true, mode: 0o700 });
    const held = { name: 'held', createdAt: new Date().toISOString(), options: { ...NAS, vers: '3', options: '', readonly: 'false' }, mounts: { A: 1 }, mounted: true };
    await writeFile(path.join(dir, 'state', 'state.json'), JSON.stringify({ version: 1, volumes: { held } }), { mode: 0o600 });
    const port = await freePort();
    const t0 = performance.now();
    const p = await startPlugin(dir, { LOG_LEVEL: 'info', OSSNAS_METRICS_ADDRESS: `127.0.0.1:${port}` });
    t.after(() => finishPlugin(p));
    const deadline = Date.now() + 10_000;
    while (!/mounts of held volumes restored after start/.test(p.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const elapsed = (performance.now() - t0) / 1000;
    const m = await scrapeMetrics(port);
    assert.deepEqual(
      ['adopted', 'remounted', 'failed', 'released'].map((r) => m.get(`ossnas_restore_volumes{result="${r}"}`)),
      [0, 0, 1, 0],
      p.output(),
    );
    const took = m.get('ossnas_restore_duration_seconds');
    assert.ok(took !== undefined && took > 0 && took < elapsed, `restore took ${took} s, ${elapsed.toFixed(2)} s after the start`);
  });

  it('no listener and no metrics unless OSSNAS_METRICS_ADDRESS is set', async (t) => {
    const p = await startPluginInTempDir({ LOG_LEVEL: 'info' });
    t.after(() => finishPlugin(p));
    await p.client.call('VolumeDriver.List', {});
    assert.deepEqual(await listeningPorts(p.child.pid!), []);
    assert.ok(!/metrics/.test(p.output()), p.output());
  });

  describe('with OSSNAS_METRICS_ADDRESS', () => {
    let p: PluginProcess;
    let port: number;
    const scrape = () => scrapeMetrics(port);
    before(async () => {
      port = await freePort();
      p = await startPluginInTempDir({ LOG_LEVEL: 'info', OSSNAS_METRICS_ADDRESS: `127.0.0.1:${port}` });
    });
    after(() => finishPlugin(p));

    it('listens on the address it was given, and nowhere else', async () => {
      const deadline = Date.now() + 5000;
      while (!/metrics listening/.test(p.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await listeningPorts(p.child.pid!), [port]);
      const other = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(other.status, 404);
    });

    it('counts calls by call and outcome, with their durations', async () => {
      const was = await scrape();
      const n = (m: Map<string, number>, key: string) => m.get(key) ?? 0;
      await p.client.call('VolumeDriver.Create', { Name: 'm1', Opts: NAS });
      await p.client.call('VolumeDriver.Create', { Name: 'm2', Opts: { ...NAS, vers: '4.1' } });
      await p.client.call('VolumeDriver.Create', { Name: 'm3', Opts: { type: 'oss' } });
      await p.client.call('VolumeDriver.Get', { Name: 'm1' });
      await p.client.call('VolumeDriver.Get', { Name: 'missing' });
      await p.client.call('VolumeDriver.NoSuchCall', {});
      await p.client.call('VolumeDriver.NoSuchCallEither', {});
      const now = await scrape();
      const delta = (key: string) => n(now, key) - n(was, key);
      assert.equal(delta('ossnas_calls_total{call="VolumeDriver.Create",outcome="ok"}'), 2);
      assert.equal(delta('ossnas_calls_total{call="VolumeDriver.Create",outcome="failed"}'), 1);
      assert.equal(delta('ossnas_calls_total{call="VolumeDriver.Get",outcome="ok"}'), 1);
      assert.equal(delta('ossnas_calls_total{call="VolumeDriver.Get",outcome="failed"}'), 1);
      assert.equal(delta('ossnas_calls_total{call="other",outcome="failed"}'), 2, 'unknown paths share one series');
      assert.equal(delta('ossnas_call_duration_seconds_count{call="VolumeDriver.Get"}'), 2);
      assert.ok(delta('ossnas_call_duration_seconds_sum{call="VolumeDriver.Get"}') > 0);
      assert.ok(![...now.keys()].some((k) => k.includes('NoSuchCall')));
      // Gauges come from state at the scrape.
      assert.equal(now.get('ossnas_volumes{type="nas"}'), 2);
      assert.equal(now.get('ossnas_volumes{type="oss"}'), undefined, 'a failed Create made no volume');
      assert.equal(now.get('ossnas_volumes_by_health{health="idle"}'), 2);
      assert.equal(now.get('ossnas_volumes_by_health{health="ok"}'), 0);
      assert.equal(now.get('ossnas_mount_references'), 0);
      // The library's process metrics come along.
      assert.ok((now.get('process_resident_memory_bytes') ?? 0) > 10 * 2 ** 20);
    });


    it('a removed volume leaves the gauges', async () => {
      await p.client.call('VolumeDriver.Remove', { Name: 'm2' });
      assert.equal((await scrape()).get('ossnas_volumes{type="nas"}'), 1);
    });
  });

  it('a busy address leaves the plugin serving volumes, and says why in the log', async (t) => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    t.after(() => new Promise((r) => busy.close(r)));
    const { port } = busy.address() as AddressInfo;
    const p = await startPluginInTempDir({ LOG_LEVEL: 'info', OSSNAS_METRICS_ADDRESS: `127.0.0.1:${port}` });
    t.after(() => finishPlugin(p));
    assert.equal((await p.client.call('VolumeDriver.Create', { Name: 'still', Opts: NAS })).status, 200);
    const failure = () => logLines(p).find((l) => l.msg === 'metrics listener could not start; serving volumes without it');
    const deadline = Date.now() + 5000;
    while (!failure() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal((failure()?.err as { code?: string } | undefined)?.code, 'EADDRINUSE', p.output());
    assert.equal(failure()?.level, 50);
  });
});
