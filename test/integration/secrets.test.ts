// Where do OSS keys end up? The real program as a plain host process, real s3fs and rclone (each in its turn), a real S3 server
// (s3rver, behind a front that checks every signature against the keys below). Volumes with inline keys, a credentials profile and an STS profile are mounted, mounts
// are made to fail and Creates are refused, all with known secret values in play; then everything
// an outsider could observe is searched for them: API answers, the log, every process's command
// line and environment, and every file under the plugin's directories. Needs root (FUSE mounts).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readMounts } from '../../src/host/mountinfo.js';
import type { Reply } from '../helpers/docker-client.js';
import { fuseClientPid, processesWith, waitFor } from '../helpers/docker.js';
import { OSS_CLIENTS } from '../../src/backends/oss/options.js';
import type { OssClientName } from '../../src/backends/oss/other-opts.js';
import { rootSkipReason } from '../helpers/env.js';
import { finishPlugin, startPluginInTempDir, writeProfile, type PluginProcess } from '../helpers/plugin-process.js';
import { startS3, type KeySet, type S3Server } from '../helpers/s3.js';

/** A value no other process or file on this host can hold by chance: a readable prefix, random hex. */
const secret = (what: string) => `ossnas-${what}-${randomBytes(12).toString('hex')}`;

const SECRETS = {
  /** akSecret of the volumes with inline keys */
  inline: secret('inline-aksecret'),
  /** akSecret in the profile `keys` */
  profile: secret('profile-aksecret'),
  /** akSecret and securityToken in the STS profile `sts` */
  stsSecret: secret('sts-aksecret'),
  stsToken: secret('sts-token'),
  /** sent only in a Create that conflicts with an existing volume */
  conflict: secret('conflict-aksecret'),
  /** sent only in Creates refused for their options */
  refused: secret('refused-aksecret'),
};
type SecretName = keyof typeof SECRETS;
const SECRET_NAMES = Object.keys(SECRETS) as SecretName[];

// The S3 server knows each secret under a key id of its own (and the STS key with its token), and
// refuses a request signed otherwise: the volumes that mount used the right keys. An akId is not a
// secret (like a user name): API answers and the log show none, but /proc and files are not
// searched for them; the secrets are the akSecrets and the STS token.
const AK_IDS = { inline: 'SECRETSINLINEKEY', profile: 'SECRETSPROFILEKEY', sts: 'SECRETSSTSKEY' };
const SERVER_KEYS: KeySet = {
  [AK_IDS.inline]: SECRETS.inline,
  [AK_IDS.profile]: SECRETS.profile,
  [AK_IDS.sts]: { secret: SECRETS.stsSecret, token: SECRETS.stsToken },
};
const holdsAkId = (text: string) => Object.values(AK_IDS).some((id) => text.includes(id));

const BUCKET = 'secrets-bucket';
const DEAD_URL = 'http://127.0.0.1:9'; // nothing listens on the discard port
const ID = (n: number) => String(n).repeat(64).slice(0, 64);

/** Names of the secrets that occur in `text`. */
function secretsIn(text: string): SecretName[] {
  return SECRET_NAMES.filter((n) => text.includes(SECRETS[n]));
}

/** Every regular file below `dir`, never descending into a mount point: a bucket is not ours to read. */
async function filesUnder(dir: string, mountPoints: Set<string>): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && !mountPoints.has(p)) out.push(...(await filesUnder(p, mountPoints)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

const mode = async (p: string) => (await stat(p)).mode & 0o777;
const octal = (m: number) => `0${m.toString(8)}`;

/** What the clients say and do differently with the same keys. */
const BY_CLIENT = {
  s3fs: { noBucket: /failed: s3fs .*bucket or key not found/ },
  rclone: { noBucket: /failed: rclone could not reach bucket no-such-bucket: .*directory not found/ },
} satisfies Record<OssClientName, unknown>;

for (const client of OSS_CLIENTS) describe(`secrets stay out of everything observable (${client})`, { skip: rootSkipReason(), timeout: 180_000 }, () => {
  let s3: S3Server;
  let plugin: PluginProcess;
  /** Every answer the API gave during the test, by call, for the final search. */
  const answers: { call: string; text: string }[] = [];

  /** A plugin call, its answer kept. Only the volume name is noted: a Create's body holds secrets. */
  async function call(method: string, args: { Name?: string; [k: string]: unknown } = {}): Promise<Reply> {
    const r = await plugin.client.call(`VolumeDriver.${method}`, args);
    answers.push({ call: `${method} ${args.Name ?? ''}`.trim(), text: r.text });
    return r;
  }
  async function create(name: string, opts: Record<string, string>): Promise<Reply> {
    return call('Create', { Name: name, Opts: { type: 'oss', bucket: BUCKET, url: s3.url, ...(client === 'rclone' && { client }), ...opts } });
  }
  const mountpoint = (name: string) => path.join(plugin.mountRoot, name);

  // The three ways keys reach a volume; each is mounted and written through.
  const WORKING: Record<string, Record<string, string>> = {
    inline: { akId: AK_IDS.inline, akSecret: SECRETS.inline },
    profile: { credentials: 'keys' },
    sts: { credentials: 'sts' },
  };
  // Volumes whose Mount fails with secrets in play: s3fs runs (and prints its own error) for a
  // bucket that does not exist; an endpoint where nothing listens fails before s3fs starts.
  const FAILING: Record<string, Record<string, string>> = {
    'inline-nobucket': { ...WORKING.inline, bucket: 'no-such-bucket' },
    'sts-nobucket': { ...WORKING.sts, bucket: 'no-such-bucket' },
    'inline-dead': { ...WORKING.inline, url: DEAD_URL },
    'sts-dead': { ...WORKING.sts, url: DEAD_URL },
  };
  const ALL = [...Object.keys(WORKING), ...Object.keys(FAILING)];

  before(async () => {
    s3 = await startS3([BUCKET], { keys: SERVER_KEYS });
    plugin = await startPluginInTempDir({ OSSNAS_MOUNT_TIMEOUT: '6' });
    await writeProfile(plugin.credentialsDir, 'keys', AK_IDS.profile, SECRETS.profile);
    await writeProfile(plugin.credentialsDir, 'sts', AK_IDS.sts, SECRETS.stsSecret, SECRETS.stsToken);
  });
  after(async () => {
    await finishPlugin(plugin);
    await s3?.stop();
  });

  it('inline keys, a profile and an STS profile mount, and a file written through each reaches the bucket', async () => {
    for (const [name, opts] of Object.entries(WORKING)) {
      assert.deepEqual((await create(name, opts)).json, { Err: '' }, `Create ${name}`);
      const r = await call('Mount', { Name: name, ID: ID(1) });
      assert.equal(r.status, 200, `Mount ${name}: ${r.text}`);
      await writeFile(path.join(mountpoint(name), `${name}.txt`), `written through ${name}\n`);
      // rclone uploads after close.
      await waitFor(`${name}.txt in the bucket`, async () => (await s3.getObject(BUCKET, `${name}.txt`)) === `written through ${name}\n`, 10_000, 50);
    }
  });

  it(`mounts that fail with secrets in play say why, in ${client}'s words or the endpoint's`, async () => {
    for (const [name, opts] of Object.entries(FAILING)) {
      assert.deepEqual((await create(name, opts)).json, { Err: '' }, `Create ${name}`);
      const r = await call('Mount', { Name: name, ID: ID(2) });
      assert.equal(r.status, 500, `Mount ${name} should fail: ${r.text}`);
      const expected = name.endsWith('-dead') ? /is not reachable: .* refused the connection/ : BY_CLIENT[client].noBucket;
      assert.match(String(r.json.Err), expected);
      // Docker sends an Unmount after a failed Mount.
      assert.deepEqual((await call('Unmount', { Name: name, ID: ID(2) })).json, { Err: '' });
    }
  });

  it('Creates with wrong options, or conflicting with a volume, are refused naming keys, never values', async () => {
    const inline = { akId: AK_IDS.inline, akSecret: SECRETS.refused };
    const refusals: Array<[string, Record<string, string>, RegExp]> = [
      ['unknown key', { ...inline, colour: 'blue' }, /unknown option 'colour'/],
      // A profile's spelling is not an option key: the secret travels under a key the plugin does not know.
      ['secret under an unknown key', { akId: AK_IDS.inline, accessKeySecret: SECRETS.refused }, /unknown option 'accessKeySecret'/],
      ['bad secret value', { akId: AK_IDS.inline, akSecret: `${SECRETS.refused}:x` }, /invalid option 'akSecret'/],
      ['bad token value', { ...inline, securityToken: `${SECRETS.refused} x` }, /invalid option 'securityToken'/],
      ['inline keys and a profile', { ...inline, credentials: 'sts' }, /either credentials=PROFILE or akId\/akSecret/],
    ];
    for (const [what, opts, expected] of refusals) {
      const r = await create('refused', opts);
      assert.equal(r.status, 500, `${what}: ${r.text}`);
      assert.match(String(r.json.Err), expected, what);
    }
    const r = await create('inline', { ...WORKING.inline, akSecret: SECRETS.conflict });
    assert.match(String(r.json.Err), /volume inline already exists with different options \(akSecret\)/);
  });

  it('no secret (nor the akId) in any Get, List or Status answer, any Err, or the log', async () => {
    for (const name of [...ALL, 'refused']) await call('Get', { Name: name });
    const list = await call('List');
    assert.deepEqual(
      (list.json.Volumes as Array<{ Name: string }>).map((v) => v.Name).sort(),
      [...ALL].sort(),
      'the refused Creates left no volume',
    );
    const status = (name: string) => answers.findLast((a) => a.call === `Get ${name}`)!.text;
    assert.match(status('sts-nobucket'), new RegExp(`"lastError":"[^"]*${BY_CLIENT[client].noBucket.source.replace(/^failed: /, '')}`), `Status carries the ${client} error`);
    assert.match(status('inline'), /"credentials":"inline"/);
    assert.match(status('sts'), /"credentials":"profile sts"/);

    const leaks = answers.flatMap((a) => secretsIn(a.text).map((s) => `${a.call} answer holds ${s}: ${a.text}`));
    assert.deepEqual(leaks, []);
    assert.deepEqual(answers.filter((a) => holdsAkId(a.text)).map((a) => a.call), [], 'answers holding an akId');

    const log = plugin.output();
    const logLeaks = log.split('\n').flatMap((line) => secretsIn(line).map((s) => `log line holds ${s}: ${line}`));
    assert.deepEqual(logLeaks, []);
    assert.ok(!holdsAkId(log), 'the log holds an akId');
  });

  it(`no secret in any command line; STS keys only in the environment of their own s3fs (rclone: in none), which only root reads`, async () => {
    for (const s of SECRET_NAMES) assert.deepEqual(await processesWith(SECRETS[s]), [], `command lines holding ${s}`);

    // s3fs accepts a session token only from its environment (AWSSESSIONTOKEN), and the key pair
    // then travels with it. That environment must be the STS volume's client's alone, and root's.
    const stsPid = await fuseClientPid(mountpoint('sts'));
    assert.ok(stsPid, `the ${client} client of the sts volume runs`);
    const environ = await stat(`/proc/${stsPid}/environ`);
    assert.equal(octal(environ.mode & 0o777), '0400', 'mode of the STS client\'s environ');
    assert.equal(environ.uid, 0, 'owner of the STS client\'s environ');
    const pids = (hits: string[]) => hits.map((h) => Number(h.split(':')[0]));
    for (const s of SECRET_NAMES) {
      // rclone reads every key from its config file, removed once the mount is ready.
      const allowed: number[] = client === 's3fs' && (s === 'stsSecret' || s === 'stsToken') ? [stsPid] : [];
      assert.deepEqual(pids(await processesWith(SECRETS[s], 'environ')), allowed, `processes whose environment holds ${s}`);
    }
  });

  it('files holding a secret are root-only, in root-only directories, and only where they must be', async () => {
    const mountPoints = new Set((await readMounts()).map((m) => m.mountPoint));
    const found: Record<string, string[]> = Object.fromEntries(SECRET_NAMES.map((s) => [s, []]));
    for (const file of await filesUnder(plugin.dir, mountPoints)) {
      const held = secretsIn(await readFile(file, 'latin1'));
      if (held.length === 0) continue;
      const rel = path.relative(plugin.dir, file);
      for (const s of held) found[s]!.push(rel);
      const st = await stat(file);
      assert.equal(st.mode & 0o077, 0, `${rel} (mode ${octal(st.mode & 0o777)}) holds ${held.join(', ')} and others may read it`);
      assert.equal(st.uid, 0, `${rel} holds a secret and is not root's`);
      // The credentials directory is the operator's (read-only to the plugin; docs/installing.md makes
      // it with a plain mkdir -p): there the file's own mode is what protects the keys.
      if (path.dirname(file) !== plugin.credentialsDir) {
        assert.equal(octal(await mode(path.dirname(file))), '0700', `mode of ${path.dirname(rel)}, which holds ${rel}`);
      }
    }
    // The state keeps the inline keys (volumes are mounted again from it), each volume's in a file
    // of its own, never in the journal or snapshot. Profiles stay in their files; no key that was
    // refused, and no handed-over passwd file, stays anywhere.
    assert.ok(found.inline!.length > 0 && found.inline!.every((f) => /^state\/secrets\/[^/]+\.json$/.test(f)), `inline keys in ${found.inline!.join(', ')}`);
    assert.deepEqual({ ...found, inline: [] }, {
      inline: [],
      profile: ['credentials/keys'],
      stsSecret: ['credentials/sts'],
      stsToken: ['credentials/sts'],
      conflict: [],
      refused: [],
    });
    // The directories that held the key files handed to the client while it mounted: s3fs's
    // passwd files (not the STS volumes': s3fs takes a token only from its environment), rclone's
    // config files (every volume whose endpoint answered).
    const ossRun = path.join(plugin.runDir, 'oss');
    const perVolume = (await readdir(ossRun)).sort();
    assert.deepEqual(perVolume, client === 's3fs' ? ['inline', 'inline-nobucket', 'profile'] : ['inline', 'inline-nobucket', 'profile', 'sts', 'sts-nobucket']);
    for (const v of perVolume) assert.deepEqual(await readdir(path.join(ossRun, v)), [], `${v}'s key file outlived the mount`);
    for (const d of [plugin.runDir, ossRun, ...perVolume.map((v) => path.join(ossRun, v))]) {
      assert.equal(octal(await mode(d)), '0700', `mode of ${path.relative(plugin.dir, d)}`);
    }
  });

  it('Unmount and Remove every volume: the objects stay in the bucket, and no file holds a secret but the profiles', async () => {
    for (const name of Object.keys(WORKING)) {
      assert.deepEqual((await call('Unmount', { Name: name, ID: ID(1) })).json, { Err: '' }, `Unmount ${name}`);
    }
    for (const name of ALL) assert.deepEqual((await call('Remove', { Name: name })).json, { Err: '' }, `Remove ${name}`);
    assert.deepEqual((await call('List')).json.Volumes, []);
    assert.deepEqual(await s3.keys(BUCKET), ['inline.txt', 'profile.txt', 'sts.txt'], 'Remove must never delete bucket data');

    const mountPoints = new Set((await readMounts()).map((m) => m.mountPoint));
    // The run directory's tmpfs stays (see below): the keys were handed over in memory.
    assert.deepEqual([...mountPoints].filter((m) => m.startsWith(plugin.dir + path.sep) && m !== plugin.runDir), [], 'left mounted');
    const holders: string[] = [];
    for (const file of await filesUnder(plugin.dir, mountPoints)) {
      if (secretsIn(await readFile(file, 'latin1')).length) holders.push(path.relative(plugin.dir, file));
    }
    assert.deepEqual(holders.sort(), ['credentials/keys', 'credentials/sts']);
    const leaks = answers.flatMap((a) => secretsIn(a.text).map((s) => `${a.call} answer holds ${s}`));
    assert.deepEqual(leaks, []);
    assert.deepEqual(secretsIn(plugin.output()), [], 'secrets in the log');
  });
});
