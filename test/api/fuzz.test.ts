// Property-based checks of the real program (dist/main.js) over its unix socket: random and
// malformed request bodies on every endpoint, and hostile Create options. Every command that could
// mount something is a stub on PATH that logs its call and fails, so a value that slipped past
// validation into a mount (or a half-created volume) shows up in the stub log or in Get.
// Needs `npm run build` first; no root, no Docker.
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { CONTENT_TYPE } from '../../src/api/routes.js';
import { DISK_KEYS } from '../../src/backends/disk/options.js';
import { NAS_KEYS } from '../../src/backends/nas/options.js';
import { OSS_KEYS } from '../../src/backends/oss/options.js';
import type { Reply } from '../helpers/docker-client.js';
import { tempDir } from '../helpers/env.js';
import { finishPlugin, startPlugin, type PluginProcess } from '../helpers/plugin-process.js';

const STUBS = ['s3fs', 'ossfs', 'mount', 'umount', 'nsenter', 'losetup', 'blkid', 'mkfs.ext4', 'mkfs.xfs', 'mount.nfs'];
const ENDPOINTS = [
  'Plugin.Activate',
  'VolumeDriver.Create',
  'VolumeDriver.Remove',
  'VolumeDriver.Mount',
  'VolumeDriver.Unmount',
  'VolumeDriver.Path',
  'VolumeDriver.Get',
  'VolumeDriver.List',
  'VolumeDriver.Capabilities',
];
/** Docker's pattern for local volume names, as src/driver/names.ts applies it. */
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,199}$/;
const MOUNT_ID = 'f'.repeat(64);
const RUNS_BODIES = 2000;
const RUNS_CREATE = 1500;

let tmp: Awaited<ReturnType<typeof tempDir>>;
let plugin: PluginProcess;
let stubLog: string;
let requests = 0;
const statuses = new Map<number, number>();
const started = Date.now();

before(async () => {
  tmp = await tempDir('ossnas-fuzz-');
  const stubDir = path.join(tmp.dir, 'stubs');
  stubLog = path.join(tmp.dir, 'stub-calls.log');
  await mkdir(stubDir);
  await writeFile(stubLog, '');
  const quotedLog = `'${stubLog.replace(/'/g, `'\\''`)}'`;
  for (const name of STUBS) {
    const file = path.join(stubDir, name);
    await writeFile(file, `#!/bin/sh\necho "${name} $*" >> ${quotedLog}\nexit 1\n`);
    await chmod(file, 0o755);
  }
  plugin = await startPlugin(tmp.dir, {
    PATH: `${stubDir}${path.delimiter}${process.env.PATH ?? ''}`,
    // Our own PID is in the plugin's mount namespace, so it runs commands directly. With `auto`,
    // a host where PID 1's namespace link cannot be read gets a probe `nsenter -t 1 -m -- true`
    // at the first disk Create with device=: a stub call, though not a mount.
    OSSNAS_HOST_PID: String(process.pid),
    LOG_LEVEL: 'warn', // thousands of calls; errors (internal ones, crashes) still show
  });
});

after(async () => {
  await finishPlugin(plugin);
  await tmp?.cleanup();
});

/** A dead or stuck server fails the property with the request, instead of hanging the test. */
async function send(endpoint: string, body: string | undefined): Promise<Reply> {
  requests++;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within 10 s to ${endpoint}`)), 10_000);
  });
  try {
    const r = await Promise.race([plugin.client.raw(`/${endpoint}`, body), late]);
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    return r;
  } finally {
    clearTimeout(timer);
  }
}

const call = (endpoint: string, args: unknown) => send(endpoint, JSON.stringify(args) + '\n');

const stubCalls = async () => readFile(stubLog, 'utf8');

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const BODY_OPTIONAL = ['Plugin.Activate', 'VolumeDriver.List', 'VolumeDriver.Capabilities'];

/** Whether routes.ts must refuse this body with 400 before the driver sees it (its request schemas). */
function malformed(endpoint: string, body: string | undefined): boolean {
  if (body === undefined || body.trim() === '') return !BODY_OPTIONAL.includes(endpoint);
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return true;
  }
  if (!isObject(v)) return true;
  if (BODY_OPTIONAL.includes(endpoint)) return false;
  if (typeof v.Name !== 'string') return true;
  if (endpoint === 'VolumeDriver.Mount' || endpoint === 'VolumeDriver.Unmount') return typeof v.ID !== 'string';
  if (endpoint === 'VolumeDriver.Create') {
    return !(v.Opts === null || v.Opts === undefined || (isObject(v.Opts) && Object.values(v.Opts).every((o) => typeof o === 'string')));
  }
  return false;
}

/** Every answer: JSON object, our content type; a failure carries a non-empty Err; a success has its endpoint's shape. */
function checkAnswer(endpoint: string, r: Reply): Record<string, unknown> {
  const where = `${endpoint} -> ${r.status} ${r.text.slice(0, 300)}`;
  assert.equal(r.contentType, CONTENT_TYPE, where);
  const body: unknown = JSON.parse(r.text); // throws on a non-JSON answer
  assert.ok(isObject(body), `not a JSON object: ${where}`);
  if (r.status !== 200) {
    assert.ok([400, 500].includes(r.status), `unexpected status: ${where}`);
    assert.ok(typeof body.Err === 'string' && body.Err.length > 0, `no Err: ${where}`);
    // The fallback for exceptions the program did not expect: a fuzzer finding one is a bug.
    assert.doesNotMatch(body.Err, /^internal error/, where);
    return body;
  }
  switch (endpoint) {
    case 'Plugin.Activate':
      assert.deepEqual(body, { Implements: ['VolumeDriver'] }, where);
      break;
    case 'VolumeDriver.Capabilities':
      assert.deepEqual(body, { Capabilities: { Scope: 'local' } }, where);
      break;
    case 'VolumeDriver.Create':
    case 'VolumeDriver.Remove':
    case 'VolumeDriver.Unmount':
      assert.deepEqual(body, { Err: '' }, where);
      break;
    case 'VolumeDriver.Mount':
    case 'VolumeDriver.Path':
      assert.ok(typeof body.Mountpoint === 'string' && body.Mountpoint.startsWith(plugin.mountRoot + '/'), where);
      assert.equal(body.Err, '', where);
      break;
    case 'VolumeDriver.Get':
      assert.ok(isObject(body.Volume) && typeof body.Volume.Name === 'string', where);
      assert.equal(body.Err, '', where);
      break;
    case 'VolumeDriver.List':
      assert.ok(Array.isArray(body.Volumes), where);
      assert.equal(body.Err, '', where);
      break;
    default:
      assert.fail(`no shape known for ${endpoint}`);
  }
  return body;
}

// ---- arbitraries -------------------------------------------------------------------------

/**
 * Up to ~100 KB once JSON-encoded, by repeating a short piece (generating that many characters one
 * by one is slow). Measured encoded: a NUL takes 6 bytes as \u0000, and a body of a few such
 * strings must stay below the 1 MB limit, which has its own test.
 */
const longString = fc
  .record({ piece: fc.string({ unit: 'binary', minLength: 1, maxLength: 4 }), bytes: fc.integer({ min: 1000, max: 100_000 }) })
  .map(({ piece, bytes }) => piece.repeat(Math.max(1, Math.floor(bytes / (Buffer.byteLength(JSON.stringify(piece)) - 2)))));

/** A value of any JSON type, for a field that wants a string (or an object, for Opts). */
const anyField = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom('web', 'a', MOUNT_ID, '', '..', 'a/b', '\0') },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: longString },
);

const optsField = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 20 }), { maxKeys: 5 }),
  fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }), // non-string values
  anyField,
);

/** Objects with some of Name, ID, Opts (of any type) and maybe unknown keys. */
const fieldsBody = fc
  .tuple(
    fc.record({ Name: anyField, ID: anyField, Opts: optsField }, { requiredKeys: [] }),
    fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 2 }),
  )
  .map(([known, extra]) => JSON.stringify({ ...extra, ...known }) + '\n');

/** undefined: no body at all. */
const requestBody: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 5, arbitrary: fieldsBody },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) }, // incl. non-objects
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) }, // mostly invalid JSON
  { weight: 2, arbitrary: fc.tuple(fieldsBody, fc.nat()).map(([t, n]) => t.slice(0, n % t.length)) }, // cut short
  { weight: 1, arbitrary: fc.constantFrom(undefined, '', ' ', '\n', '\r\n\t', 'null', '[]', '{}', '"x"', '{"Name":"x"}{"Name":"y"}') },
  { weight: 1, arbitrary: longString.map((s) => JSON.stringify({ Name: s, ID: s, Opts: { type: s } })) },
);

const REAL_KEYS = [...new Set<string>([...OSS_KEYS, ...NAS_KEYS, ...DISK_KEYS])];

/** A real key as users might spell it (the program folds case, '-' and '_'), or nearly. */
const optionKey = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...REAL_KEYS) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...REAL_KEYS),
        fc.constantFrom<(k: string) => string>(
          (k) => k.toUpperCase(),
          (k) => k.toLowerCase(),
          (k) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
          (k) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`),
          (k) => `-${k}_`,
          (k) => `${k}s`, // nearly a key
          (k) => ` ${k}`,
          (k) => `${k}\0`,
        ),
      )
      .map(([k, spell]) => spell(k)),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);

const HOSTILE = [
  '', ' ', '  x  ', '\t', ',', 'a,b', 'ro,suid', '\n', 'a\nb', '\r\n', '\0', 'a\0b', '=', 'a=b', 'a==b',
  '..', '../..', '/a/../b', 'a/./b', '/', '//', '/etc', '/etc/passwd', '/dev/sda', '/dev/vda', '/dev/../etc/shadow',
  '/dev/./sda', '/dev/loop0', '/proc/1/root', '$(id)', '`id`', '; rm -rf /', '&& id', '| id', '$HOME', "'", '"', '\\',
  '-o allow_other,suid', '-o allow_other', '-o public_bucket=1', '-o public_bucket=1 -o allow_other', '--', '-', '-L x -O y',
  'é', '日本語', '🙂', '\u202e', '\ud800', 'true', 'false', 'yes', '0', '-1', '4294967295', '99999999999', '0777', '7777',
  'none', 'hard,addr=10.0.0.9', 'vers=4,ro', 'nolock,hard', 'sec=sys', 'port=2049', '10G', '1T', '1.5T', '16M', '1e3',
  'http://127.0.0.1:9000', 'https://oss-cn-hangzhou.aliyuncs.com', 'http://u:p@host', 'file:///etc/passwd', 'host/path',
  '[::1]', '10.0.0.1', 'nas.example.com', 'server:/export', 'bucket', 'my-bucket', 'ext4', 'xfs', 'btrfs', 'profile',
];

const hostileValue = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...HOSTILE) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...HOSTILE), fc.constantFrom(...HOSTILE)).map(([a, b]) => a + b) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: longString },
);

const volumeType = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('oss', 'nas', 'disk') },
  { weight: 2, arbitrary: fc.constantFrom('OSS', ' nas ', 'Disk', 'local', 'fake', '', 'oss,nas', 'disk\0', '../oss') },
  { weight: 1, arbitrary: fc.string({ maxLength: 10 }) },
);

/** Options that Create accepts, so that perturbing a few keys gives near misses (and some successes). */
const VALID: Record<string, Record<string, string>> = {
  oss: { bucket: 'my-bucket', url: 'http://127.0.0.1:9000', otherOpts: '-o public_bucket=1' },
  nas: { server: '10.0.0.1', path: '/share' },
  disk: { size: '1G' },
};

const createOpts: fc.Arbitrary<Record<string, string> | null> = fc.oneof(
  {
    weight: 5, // a valid volume of a type, with a few keys changed or added
    arbitrary: fc
      .tuple(fc.constantFrom('oss', 'nas', 'disk'), fc.dictionary(optionKey, hostileValue, { maxKeys: 3 }))
      .map(([type, changes]) => ({ type, ...VALID[type], ...changes })),
  },
  {
    weight: 4, // any type, any keys
    arbitrary: fc
      .tuple(fc.constantFrom('type', 'Type', 'TYPE', '_type'), volumeType, fc.dictionary(optionKey, hostileValue, { maxKeys: 6 }))
      .map(([key, type, rest]) => ({ [key]: type, ...rest })),
  },
  { weight: 1, arbitrary: fc.oneof(fc.constant(null), fc.dictionary(optionKey, hostileValue, { maxKeys: 4 })) },
);

const INVALID_NAMES = ['', '.', '..', '...', '../x', 'a/b', '/etc', '../../etc', 'x/../../y', 'x'.repeat(300), 'a'.repeat(201),
  'a\0b', '\0', '-x', '_x', '.x', 'a b', 'a\nb', 'é', 'a:b', 'a,b', '$(id)', '`id`', 'a;b'];

/** [name, valid]: a valid name gets a unique suffix in the property, so no earlier case created it. */
const volumeName = fc.oneof(
  fc.tuple(fc.oneof(fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$/), fc.constant('v'.repeat(180))), fc.constant(true)),
  fc.tuple(fc.constantFrom(...INVALID_NAMES), fc.constant(false)),
  fc.tuple(fc.string({ unit: 'binary', maxLength: 20 }).filter((s) => !VOLUME_NAME.test(s)), fc.constant(false)),
);

/**
 * fc.assert, with the failing check's message in the report and the report cut to a readable
 * size (a counterexample can hold 100 KB strings). The seed and path in it replay the failure.
 */
async function assertProperty<Ts extends [unknown, ...unknown[]]>(property: fc.IAsyncProperty<Ts>, numRuns: number): Promise<void> {
  const out = await fc.check(property, { numRuns, includeErrorInReport: true });
  if (out.failed) assert.fail((fc.defaultReportMessage(out) ?? 'property failed').replace(/([^\n]{400})[^\n]{200,}/g, '$1... (cut)'));
}

// ---- properties --------------------------------------------------------------------------

describe('the program under random requests', () => {
  it('answers every body on every endpoint with a JSON object, and every failure with an Err', async (t) => {
    const t0 = Date.now();
    const n0 = requests;
    await assertProperty(
      fc.asyncProperty(fc.constantFrom(...ENDPOINTS), requestBody, async (endpoint, body) => {
        const r = await send(endpoint, body);
        const answer = checkAnswer(endpoint, r);
        if (malformed(endpoint, body)) {
          assert.equal(r.status, 400, r.text.slice(0, 300));
          assert.ok(String(answer.Err).startsWith(`${endpoint}: `), 'a 400 names the call');
        } else {
          assert.notEqual(r.status, 400, r.text.slice(0, 300));
        }
      }),
      RUNS_BODIES,
    );
    t.diagnostic(`${requests - n0} requests in ${Date.now() - t0} ms`);
  });

  it('refuses a body over 1 MB with 413 and an Err that says so', async () => {
    const r = await send('VolumeDriver.Create', JSON.stringify({ Name: 'big', Opts: { type: 'x'.repeat(1_100_000) } }));
    assert.equal(r.status, 413);
    assert.match(String(r.json.Err), /^VolumeDriver\.Create: request body is larger than 1mb$/);
  });

  it('leaves nothing behind when Create refuses options, and never runs a mount command', async (t) => {
    const t0 = Date.now();
    const n0 = requests;
    let created = 0;
    let seq = 0;
    await assertProperty(
      fc.asyncProperty(volumeName, createOpts, async ([base, valid], opts) => {
        const name = valid ? `${base}-${++seq}` : base;
        const r = await call('VolumeDriver.Create', { Name: name, Opts: opts });
        const body = checkAnswer('VolumeDriver.Create', r);
        if (r.status === 200) {
          created++;
          const removed = await call('VolumeDriver.Remove', { Name: name });
          checkAnswer('VolumeDriver.Remove', removed);
          assert.equal(removed.status, 200, removed.text);
        } else {
          // A well-formed body (Name a string, Opts strings or null) is never a 400.
          assert.equal(r.status, 500, String(body.Err));
        }
        // Refused, or created and removed: either way no trace of the volume.
        const got = checkAnswer('VolumeDriver.Get', await call('VolumeDriver.Get', { Name: name }));
        if (valid) assert.equal(got.Err, `volume ${name} not found`);
        else assert.match(String(got.Err), /^invalid volume name/);
        if (r.status !== 200) {
          const mounted = checkAnswer('VolumeDriver.Mount', await call('VolumeDriver.Mount', { Name: name, ID: MOUNT_ID }));
          assert.equal(mounted.Err, got.Err);
        }
        assert.equal(await stubCalls(), '', 'a command ran');
      }),
      RUNS_CREATE,
    );
    t.diagnostic(`${requests - n0} requests in ${Date.now() - t0} ms; ${created} of ${RUNS_CREATE} Creates succeeded (each removed)`);
  });

  it('is still alive and answering at the end, having run no command', async (t) => {
    assert.equal(plugin.child.exitCode, null, 'the program exited');
    checkAnswer('VolumeDriver.Capabilities', await send('VolumeDriver.Capabilities', '{}\n'));
    assert.equal(await stubCalls(), '');
    assert.doesNotMatch(plugin.output(), /uncaught exception|unhandled rejection|internal error/);
    const counts = [...statuses].sort(([a], [b]) => a - b).map(([status, n]) => `${n} x ${status}`);
    t.diagnostic(`${requests} requests in all (${counts.join(', ')}), ${Date.now() - started} ms since the file started`);
  });
});
