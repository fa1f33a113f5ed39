// type=oss: a bucket (or a prefix of it) through a FUSE client running inside the plugin,
// mounted under the propagated mount. The volume's `client` says which: s3fs (or ossfs, its
// fork, when the rootfs has it), or rclone mount (rclone-client.ts).
import { access, constants } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { ensureDir, removeFileQuietly, writePrivateFile } from '../../host/files.js';
import type { Deadline } from '../../host/deadline.js';
import { findMount } from '../../host/mountinfo.js';
import { adoptFuseClient, describeExit, FUSE_STOP_MS, FuseMountError, startFuseDaemon, unmountFuse, type FuseDaemon } from '../../host/fuse.js';
import { probeThroughProxy, probeTcp, resolveHost } from '../../host/net.js';
import { ensureMemoryDir } from '../../host/tmpfs.js';
import { clientProxyEnv, describeProxy, proxyAuthorization, proxyFor, proxySecrets, type ProxySettings } from '../../proxy.js';
import { secretValues } from '../../redact.js';
import { BackendError, type Backend, type BackendContext, type VolumeOptions } from '../types.js';
import { clientRuntime, type ClientRuntime } from './client-runtime.js';
import { clientGroup, groupKey } from './client-group.js';
import { SharedClients } from './shared-clients.js';
import { resolveCredentials, roleCredentials, type Credentials } from './credentials.js';
import { refusedByClient } from './other-opts.js';
import { OptionsError } from '../options.js';
import { SettingsError, type Settings } from '../../settings.js';
import { fromSpec, NO_CREDENTIALS_HELP, normalizeEndpoint, OSS_CLIENTS, OSS_KEYS, toSpec, withDefaults, type OssSpec } from './options.js';
import type { OssClientName } from './other-opts.js';
import { cacheSharesStateFilesystem, checkBucket, rcloneCacheDir, rcloneConfig, rcloneMountArgs, retireCache, waitForUploads } from './rclone-client.js';
import { checkProfileSetting } from '../profiles.js';

/** The program that serves a volume: `client=s3fs` runs s3fs or ossfs. */
type Client = 's3fs' | 'ossfs' | 'rclone';

/** What a client start needs that does not depend on where it mounts. */
interface PreparedStart {
  client: Client;
  creds: Credentials | undefined;
  runtime: ClientRuntime;
  hostPid: number | undefined;
}
/** Every program whose mounts a restarted plugin adopts. */
const CLIENTS: readonly Client[] = ['s3fs', 'ossfs', 'rclone'];

const CLIENT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** What `rclone mount` is left for its start after the check of the bucket (measured: 30-100 ms). */
const RCLONE_START_MS = 1000;
/** At most this for the RAM role's credentials: the metadata service is on the instance's own link. */
const ROLE_CHECK_MS = 3000;

async function onPath(command: string): Promise<boolean> {
  for (const dir of CLIENT_PATH.split(':')) {
    if (await access(path.join(dir, command), constants.X_OK).then(() => true, () => false)) return true;
  }
  return false;
}

let s3fsFamily: Promise<'s3fs' | 'ossfs'> | undefined;
/** For client=s3fs: ossfs when it is installed (Alibaba's own client), else s3fs speaking OSS's S3 API. */
function chooseClient(spec: OssSpec): Promise<Client> {
  if (spec.client === 'rclone') return Promise.resolve('rclone');
  s3fsFamily ??= onPath('ossfs').then((yes) => (yes ? 'ossfs' : 's3fs'));
  return s3fsFamily;
}

/** Path-style requests are the only ones an IP address or localhost endpoint can answer. */
function needsPathStyle(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return isIP(host) !== 0 || host === 'localhost';
}

/**
 * How the client gets its keys, never through argv: a passwd file (0600, in a root-only
 * directory, removed once the mount is ready) or, for an STS token, which s3fs accepts only
 * that way, its environment (readable by root alone).
 */
interface CredentialHandoff {
  file?: { path: string; text: string };
  env: Record<string, string>;
  options: string[];
}

export function credentialHandoff(client: 's3fs' | 'ossfs', spec: OssSpec, creds: Credentials | undefined, dir: string): CredentialHandoff {
  if (!creds) return { env: {}, options: [] };
  if (creds.securityToken) {
    if (client !== 's3fs') {
      throw new BackendError('securityToken needs the s3fs client; this plugin runs ossfs, which reads only akId/akSecret');
    }
    return {
      env: { AWSACCESSKEYID: creds.akId, AWSSECRETACCESSKEY: creds.akSecret, AWSSESSIONTOKEN: creds.securityToken },
      options: ['use_session_token'],
    };
  }
  const file = path.join(dir, 'passwd');
  const text = client === 's3fs' ? `${creds.akId}:${creds.akSecret}\n` : `${spec.bucket}:${creds.akId}:${creds.akSecret}\n`;
  return { file: { path: file, text }, env: {}, options: [`passwd_file=${file}`] };
}

/** The client's argv: never a secret in it. `ownOptions`: the runtime's and the credentials'. */
export function clientArgs(spec: OssSpec, target: string, ownOptions: string[]): string[] {
  const source = spec.path === '/' ? spec.bucket : `${spec.bucket}:${spec.path}`;
  const o: string[] = [`url=${spec.url}`, 'allow_other', ...ownOptions];
  if (needsPathStyle(spec.url) && !/-o use_path_request_style\b/.test(spec.otherOpts)) o.push('use_path_request_style');
  if (spec.uid !== undefined) o.push(`uid=${spec.uid}`);
  if (spec.gid !== undefined) o.push(`gid=${spec.gid}`);
  if (spec.umask !== undefined) o.push(`umask=${spec.umask}`);
  if (spec.readonly) o.push('ro');
  const extra = spec.otherOpts ? spec.otherOpts.split(' ').filter((t) => t !== '-o') : [];
  return [source, target, '-f', ...[...o, ...extra].flatMap((x) => ['-o', x])];
}

/**
 * The client's temporary files go to the state filesystem (see client-runtime.ts), where the
 * plugin's state and disk images live: one container writing a large file must not fill it.
 * s3fs's ensure_diskfree makes the client leave that much free (ossfs, its fork, has it too),
 * unless the volume asks for its own value. s3fs then refuses to start with less free than this
 * plus multipart_size x parallel_count, and 1.90 fails a write that would need more with EIO
 * (s3fs-fuse#1768) where it would otherwise have filled the filesystem.
 */
function diskFreeOptions(spec: OssSpec, settings: Settings): string[] {
  if (settings.fuseDiskFreeMb === 0 || /-o ensure_diskfree=/.test(spec.otherOpts)) return [];
  return [`ensure_diskfree=${settings.fuseDiskFreeMb}`];
}

/** How long the endpoint may take to resolve, then to accept a TCP connection, before Mount gives up on it. */
const PROBE_MS = 3000;

/**
 * A TCP connect to the endpoint first: s3fs retries a refused or silent endpoint until the mount
 * deadline, and then has to be killed; this says what is wrong in at most a few seconds. Its time
 * comes out of the call's deadline, leaving the client time to start. An endpoint behind a proxy
 * (the client takes the same route: see proxy.ts) is asked of the proxy instead, and an error
 * names the proxy (s3fs itself would name the endpoint).
 */
async function requireReachable(url: string, deadline: Deadline, proxies: ProxySettings | undefined): Promise<void> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
  const proxy = proxyFor(url, proxies);
  try {
    if (proxy) {
      const p = new URL(proxy.url);
      const authorization = proxyAuthorization(proxy);
      await probeThroughProxy(
        { host: p.hostname, port: Number(p.port), name: describeProxy(proxy), ...(authorization && { authorization }) },
        { host: `${u.hostname}:${port}`, https: u.protocol === 'https:' },
        deadline.budget(PROBE_MS * 2, FUSE_STOP_MS),
      );
      return;
    }
    const address = await resolveHost(host, deadline.budget(PROBE_MS, FUSE_STOP_MS));
    await probeTcp(address, port, deadline.budget(PROBE_MS, FUSE_STOP_MS));
  } catch (err) {
    const check = proxy ? `check ${proxy.from} and NO_PROXY, and that this host can reach the proxy` : 'check the url option and that this host can reach it';
    throw new BackendError(`endpoint ${url} is not reachable: ${(err as Error).message}; ${check}`);
  }
}

/** Awaits every promise; throws the failure of the first one (in the list's order) that failed. */
async function firstFailureInOrder<T extends readonly unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  for (const r of settled) if (r.status === 'rejected') throw r.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/**
 * Inside the managed plugin, the process whose root shows the host's cgroupfs; undefined for a
 * plain host process, whose clients are not in a cgroup that is killed with it.
 */
async function hostPidForClients(ctx: BackendContext): Promise<number | undefined> {
  try {
    return (await ctx.hostNamespace()).pid;
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'host namespace unknown: FUSE clients stay in the plugin cgroup');
    return undefined;
  }
}

/**
 * The plugin-wide defaults, normalised; SettingsError names the setting that is wrong. main.ts
 * calls it before listening, so that `docker plugin enable` fails instead of a plugin that
 * answers the handshake and then exits.
 */
export function checkOssDefaults(defaults: Settings['ossDefaults']): Settings['ossDefaults'] & { client?: OssClientName } {
  let url: string | undefined;
  try {
    url = defaults.url === undefined ? undefined : normalizeEndpoint(defaults.url);
  } catch (err) {
    throw new SettingsError(`OSSNAS_DEFAULT_URL: ${(err as Error).message}`);
  }
  if (defaults.credentials !== undefined) checkProfileSetting('OSSNAS_DEFAULT_CREDENTIALS', defaults.credentials);
  const client = defaults.client?.trim().toLowerCase();
  if (client && !OSS_CLIENTS.includes(client as OssClientName)) {
    throw new SettingsError(`OSSNAS_DEFAULT_CLIENT must be one of ${OSS_CLIENTS.join(', ')} (or empty for s3fs), got '${defaults.client}'`);
  }
  return { ...(url && { url }), ...(defaults.credentials && { credentials: defaults.credentials }), ...(client && { client: client as OssClientName }) };
}

let memoryRunDir: Promise<unknown> | undefined;
/** The run directory in memory, made once per process; a failure is tried again at the next mount. */
async function requireMemoryRunDir(dir: string, ctx: BackendContext): Promise<void> {
  memoryRunDir ??= ensureMemoryDir(dir).then(
    (how) => how === 'mounted' && ctx.log.info({ dir }, 'a tmpfs was mounted for the keys handed to FUSE clients'),
    (err: Error) => {
      memoryRunDir = undefined;
      throw new BackendError(
        `keys for the FUSE client are only handed over in memory, and ${dir} (OSSNAS_RUN_DIR) is not on a tmpfs and could not be made one: ${err.message}`,
      );
    },
  );
  await memoryRunDir;
}

/**
 * What the client's own words mean for the operator, for the failures it words obscurely. s3fs
 * 1.90 says "invalid credentials" alike for an unknown key id, a wrong secret and a wrong token,
 * after a line about retrying with another signature that points at the network instead. rclone
 * repeats the endpoint's error code, and says "directory not found" of a bucket that is missing
 * (or that the keys may not list).
 */
function hintFor(said: string, spec: OssSpec, settings: Settings): string {
  if (/directory not found/i.test(said)) return ' (the bucket does not exist, or the keys may not list it)';
  if (/invalid credentials|SignatureDoesNotMatch|InvalidAccessKeyId|InvalidToken|InvalidSecurity/i.test(said)) {
    if (spec.ramRole) return " (the endpoint refused the instance's RAM role: check that the role's policy allows this bucket)";
    const which = spec.credentials ? `of profile '${spec.credentials}'` : spec.akId ? 'given inline (akId, akSecret)' : 'of the plugin-wide default';
    return ` (the endpoint refused the credentials ${which}: check the access key id, the secret${spec.credentials || spec.securityToken ? ' and the STS token' : ''})`;
  }
  if (/no enough disk space/i.test(said)) {
    return ` (the filesystem of ${settings.stateDir} has less free space than the client must leave: OSSNAS_FUSE_DISKFREE=${settings.fuseDiskFreeMb} MB, plus about 50 MB)`;
  }
  const proxy = proxyFor(spec.url, settings.proxy);
  if (proxy && /unable to connect/i.test(said)) return ` (the client goes through ${describeProxy(proxy)}: check that it reaches the endpoint)`;
  return '';
}

/**
 * A FUSE client in the clients' working directory, given what is left of the call less the time
 * to stop it and undo its mount.
 */
function launch(
  command: Client,
  args: string[],
  env: Record<string, string>,
  at: { runtime: ClientRuntime; target: string; hostPid: number | undefined },
  secrets: string[],
  ctx: BackendContext,
  deadline: Deadline,
): Promise<FuseDaemon> {
  const { runtime, target, hostPid } = at;
  return startFuseDaemon({ command, args, env, cwd: runtime.cwd, target, deadlineMs: deadline.budget(Infinity, FUSE_STOP_MS), secrets, log: ctx.log, hostPid });
}

export class OssBackend implements Backend {
  readonly type = 'oss';
  /** The client's mount is seen in our namespace before mount() returns (fuse.ts), as is a bind (mount(8)). */
  readonly mountsInOwnNamespace = true;
  readonly keys = OSS_KEYS;
  /** Running clients by mountpoint. Empty after a plugin restart; unmount then works from the mount table. */
  private readonly daemons = new Map<string, FuseDaemon>();
  private readonly defaults: ReturnType<typeof checkOssDefaults>;
  /** Clients shared by the volumes of one bucket (OSSNAS_SHARE_CLIENTS). */
  private readonly shared = new SharedClients(CLIENTS);
  private warnedOfSharedCache = false;

  /** Throws SettingsError when a plugin-wide default is not valid, so the plugin does not start with it. */
  constructor(defaults: Settings['ossDefaults'] = {}) {
    this.defaults = checkOssDefaults(defaults);
  }

  /** The defaults are written into the volume's options, so Status shows them and a later change of the defaults leaves the volume as created. */
  parse(options: Record<string, string>): VolumeOptions {
    return fromSpec(toSpec(withDefaults(options, this.defaults)));
  }

  /** What Create can know before any mount: the profile is readable, and the client takes the options. */
  async check(options: VolumeOptions, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const spec = toSpec(options);
    await resolveCredentials(spec, ctx.settings.credentialsDir);
    if (spec.ramRole) {
      // Off ECS, the metadata service never answers: a short wait, then the old advice.
      await roleCredentials(ctx.settings, deadline.budget(ROLE_CHECK_MS)).catch((err: Error) => {
        throw new OptionsError(`credentials are required, and the instance's RAM role cannot stand in for them (${err.message}): ${NO_CREDENTIALS_HELP}`);
      });
    }
    const client = await chooseClient(spec);
    const refused = client === 'rclone' ? undefined : refusedByClient(client, spec.otherOpts);
    if (refused) throw new OptionsError(refused);
  }

  describe(options: VolumeOptions): Record<string, unknown> {
    const spec = toSpec(options);
    return {
      bucket: spec.bucket,
      url: spec.url,
      path: spec.path,
      credentials: spec.credentials ? `profile ${spec.credentials}` : spec.akId ? 'inline' : spec.ramRole ? "the instance's RAM role" : 'none (public bucket)',
      readonly: spec.readonly,
      client: spec.client,
    };
  }

  /** For a volume bound to a shared client (s3fs only): how many volumes this process knows to share it. */
  observed(name: string): Record<string, unknown> | undefined {
    const n = this.shared.sharedWith(name);
    return n === undefined ? undefined : { client: `shared by ${n} volume${n === 1 ? '' : 's'}` };
  }

  async mount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void> {
    const spec = toSpec(options);
    // Never two clients for one mountpoint: one still known here (its mount was found dead) goes first.
    const old = this.daemons.get(target);
    this.daemons.delete(target);
    old?.stop();
    try {
      const prepared = await this.prepare(spec, ctx, deadline);
      // rclone volumes keep a client of their own: a shared one would need its uploads waited
      // for when its last volume goes (see unmount), which shared-clients.ts does not do yet.
      if (ctx.settings.shareClients && prepared.client !== 'rclone') {
        const group = clientGroup(spec, prepared.creds, await groupKey(prepared.runtime.cwd));
        const root = this.shared.rootOf(ctx.settings.mountRoot, group);
        // The shared client mounts the whole bucket; the volume is its path in it.
        const start = () => this.startClient(`.shared.${group}`, { ...spec, path: '/' }, options, root, prepared, ctx, deadline);
        await this.shared.mount(root, { name, target, bucket: spec.bucket, path: spec.path, readonly: spec.readonly }, start, ctx, deadline);
        return;
      }
      this.watch(name, target, await this.startClient(name, spec, options, target, prepared, ctx, deadline), ctx);
    } catch (err) {
      if (err instanceof FuseMountError) throw new BackendError(`mounting bucket ${spec.bucket} at ${spec.url} failed: ${err.message}${hintFor(err.message, spec, ctx.settings)}`);
      throw err;
    }
  }

  /**
   * What every client start needs, each waiting for its own I/O side by side (a TCP connect,
   * files): about 2 ms less per Mount. A failure is reported in this order whatever finished
   * first, as when they ran one after another.
   */
  private async prepare(spec: OssSpec, ctx: BackendContext, deadline: Deadline): Promise<PreparedStart> {
    const [, prepared, hostPid] = await firstFailureInOrder([
      requireReachable(spec.url, deadline, ctx.settings.proxy),
      (async () => {
        const client = await chooseClient(spec);
        const creds = spec.ramRole
          ? await roleCredentials(ctx.settings, deadline.budget(ROLE_CHECK_MS, FUSE_STOP_MS)).catch((err: Error) => {
              throw new BackendError(`getting the instance's RAM role credentials for bucket ${spec.bucket} failed: ${err.message}`);
            })
          : await resolveCredentials(spec, ctx.settings.credentialsDir);
        return { client, creds, runtime: await clientRuntime(ctx.settings.stateDir) };
      })(),
      hostPidForClients(ctx),
    ] as const);
    return { ...prepared, hostPid };
  }

  /** Starts a client that mounts `spec` at `target`; `label` names its run directory (the volume, or the shared group). */
  private async startClient(
    label: string,
    spec: OssSpec,
    options: VolumeOptions,
    target: string,
    { client, creds, runtime, hostPid }: PreparedStart,
    ctx: BackendContext,
    deadline: Deadline,
  ): Promise<FuseDaemon> {
    const dir = path.join(ctx.settings.runDir, 'oss', label);
    const secrets = [...secretValues(options), ...(creds ? Object.values(creds) : []), ...proxySecrets(ctx.settings.proxy)];
    if (client === 'rclone') return this.startRclone(label, spec, target, { creds, runtime, hostPid }, dir, secrets, ctx, deadline);
    let credFile: string | undefined;
    try {
      // Keys go to a file only for an endpoint that answered.
      const handoff = credentialHandoff(client, spec, creds, dir);
      if (handoff.file) {
        await requireMemoryRunDir(ctx.settings.runDir, ctx);
        await ensureDir(dir, 0o700);
        credFile = handoff.file.path;
        await writePrivateFile(handoff.file.path, handoff.file.text);
      }
      return await launch(
        client,
        clientArgs(spec, target, [...runtime.options, ...diskFreeOptions(spec, ctx.settings), ...handoff.options]),
        // Proxies as libcurl reads them (lowercase); a change of them applies to later mounts.
        { PATH: CLIENT_PATH, HOME: dir, ...runtime.env, ...clientProxyEnv(ctx.settings.proxy), ...handoff.env },
        { runtime, target, hostPid },
        secrets,
        ctx,
        deadline,
      );
    } finally {
      // The client has read its keys by the time the mount is ready (or it has given up).
      if (credFile) await removeFileQuietly(credFile);
    }
  }

  /**
   * rclone mount: its keys in a config file in memory (removed once the mount is ready), the
   * bucket checked with them first, its write cache in the state directory, one per volume.
   */
  private async startRclone(
    label: string,
    spec: OssSpec,
    target: string,
    { creds, runtime, hostPid }: Omit<PreparedStart, 'client'>,
    dir: string,
    secrets: string[],
    ctx: BackendContext,
    deadline: Deadline,
  ): Promise<FuseDaemon> {
    const configFile = path.join(dir, 'rclone.conf');
    // Go reads the CA bundle named by SSL_CERT_FILE; relative to the client's cwd, as for s3fs (client-runtime.ts).
    const ca = runtime.env.CURL_CA_BUNDLE;
    const env = { PATH: CLIENT_PATH, HOME: dir, ...clientProxyEnv(ctx.settings.proxy) };
    await requireMemoryRunDir(ctx.settings.runDir, ctx);
    await ensureDir(dir, 0o700);
    try {
      await writePrivateFile(configFile, rcloneConfig(spec, creds));
      // The check may take what is left but the mount's own start (fast: rclone asks the server nothing to mount).
      const checkMs = deadline.budget(Infinity, FUSE_STOP_MS + RCLONE_START_MS);
      await checkBucket(spec, configFile, { ...env, ...(ca && { SSL_CERT_FILE: path.join(runtime.cwd, ca) }) }, checkMs, secrets);
      await ensureDir(rcloneCacheDir(runtime.cwd), 0o700);
      await this.warnOfSharedCache(rcloneCacheDir(runtime.cwd), ctx);
      return await launch('rclone', rcloneMountArgs(spec, target, configFile, rcloneCacheDir('', label)), { ...env, ...(ca && { SSL_CERT_FILE: ca }) }, { runtime, target, hostPid }, secrets, ctx, deadline);
    } finally {
      await removeFileQuietly(configFile);
    }
  }

  /** Once per process: rclone's caches on the state filesystem can fill it (rclone-client.ts). */
  private async warnOfSharedCache(cacheRoot: string, ctx: BackendContext): Promise<void> {
    if (this.warnedOfSharedCache) return;
    this.warnedOfSharedCache = true;
    if (await cacheSharesStateFilesystem(cacheRoot, ctx.settings.stateDir)) {
      ctx.log.warn(
        { cache: cacheRoot },
        "rclone volumes' write caches are on the state filesystem: a write larger than its free space fills it, and Create, Mount and Unmount fail until the file is uploaded; mount a filesystem of its own on the host at <state>/fuse/rclone (docs/operations.md)",
      );
    }
  }

  /** A mount that outlived an earlier plugin process: watch its client like one of ours. */
  async adopt(name: string, _options: VolumeOptions, target: string, ctx: BackendContext): Promise<void> {
    if (this.daemons.has(target)) return;
    if (await this.shared.adopt(name, target, ctx.settings.mountRoot, ctx)) return;
    const daemon = await adoptFuseClient(target, CLIENTS);
    // The mount is kept either way; unwatched, its client's exit is noticed only when a later Mount finds it dead.
    if (!daemon) throw new BackendError(`no ${CLIENTS.join(' or ')} client of the FUSE mount at ${target} was found`);
    this.watch(name, target, daemon, ctx);
  }

  /** A client that exits while its mount is in use is reported, so that the driver repairs it. */
  private watch(name: string, target: string, daemon: FuseDaemon, ctx: BackendContext): void {
    this.daemons.set(target, daemon);
    void daemon.exited.then((exit) => {
      if (this.daemons.get(target) !== daemon) return; // unmounted on purpose
      this.daemons.delete(target);
      ctx.onMountLost(name, `${daemon.command} ${describeExit(exit)}`);
    });
  }

  /**
   * Before rclone's mount goes: every closed file uploaded. rclone exits at unmount with its
   * uploads not done, and they would wait in the cache for this volume's next mount on this host.
   * When they do not finish in time, the Unmount fails and the mount stays, still uploading.
   * Docker does not send that Unmount again: the reference no container holds goes with Remove.
   */
  private async waitForUploads(name: string, target: string, daemon: FuseDaemon | undefined, ctx: BackendContext, deadline: Deadline): Promise<void> {
    if (!(await findMount(target))) return;
    // No client known here (none was found at the restart): the one serving the mount, if any.
    // With none, nothing uploads, and waiting would only fail every Unmount of a dead mount.
    const client = daemon ?? (await adoptFuseClient(target, CLIENTS));
    if (!client) return;
    let running = true;
    void client.exited.then(() => (running = false));
    const cache = rcloneCacheDir((await clientRuntime(ctx.settings.stateDir)).cwd, name);
    const pending = await waitForUploads(cache, deadline.budget(Infinity, FUSE_STOP_MS), () => running);
    if (pending > 0 && running) {
      throw new BackendError(
        // The driver names the volume.
        `${pending} written file${pending === 1 ? ' is' : 's are'} not uploaded yet (the endpoint did not take ${pending === 1 ? 'it' : 'them'} in time); the mount is kept and uploads ${pending === 1 ? 'it' : 'them'} when it can, and docker volume rm releases it then`,
      );
    }
    if (pending > 0) ctx.log.warn({ name, pending }, 'rclone exited with writes not uploaded: they are uploaded at the next mount of the volume');
  }

  /** An rclone volume's write cache: deleted if every write in it was uploaded, else kept aside (never deleted). */
  async remove(name: string, options: VolumeOptions, ctx: BackendContext): Promise<void> {
    if (toSpec(options).client !== 'rclone') return;
    const cacheRoot = rcloneCacheDir((await clientRuntime(ctx.settings.stateDir)).cwd);
    const kept = await retireCache(cacheRoot, name);
    if (kept) ctx.log.warn({ name, kept }, 'the removed volume held writes that were never uploaded: its cache is kept');
  }

  async unmount(name: string, options: VolumeOptions, target: string, ctx: BackendContext, deadline: Deadline): Promise<void> {
    // Whatever OSSNAS_SHARE_CLIENTS says now: the mount table tells how the volume was mounted.
    try {
      if (!this.daemons.has(target) && (await this.shared.unmount(name, target, ctx.settings.mountRoot, deadline, ctx))) return;
    } catch (err) {
      throw new BackendError(`unmounting ${target} failed: ${(err as Error).message}`);
    }
    const daemon = this.daemons.get(target);
    if (toSpec(options).client === 'rclone') await this.waitForUploads(name, target, daemon, ctx, deadline);
    this.daemons.delete(target); // its exit is expected from here on
    try {
      await unmountFuse(target, deadline.budget());
    } catch (err) {
      if (daemon) this.daemons.set(target, daemon);
      throw new BackendError(`unmounting ${target} failed: ${(err as Error).message}`);
    }
  }
}
