// Plugin-wide settings. The same environment variables configure the managed plugin
// (config.json `env`, changed with `docker plugin set`) and the plain host process.
// Defaults live here as well as in config.json because `docker plugin upgrade` keeps the
// old Settings.Env and never adds variables that a newer config.json introduces.
import path from 'node:path';
import { normalizeEndpoint } from './endpoint.js';
import { effectiveNoProxy, parseNoProxy, parseProxyUrl, ProxySettingError, type OutboundProxy, type ProxySettings } from './proxy.js';

export type HostPid = 'auto' | number;

export interface Settings {
  socket: string;
  stateDir: string;
  mountRoot: string;
  credentialsDir: string;
  /** Private, root-only directory for short-lived files handed to FUSE clients. */
  runDir: string;
  hostPid: HostPid;
  logLevel: string;
  /**
   * Deadline for one call (a Mount, an Unmount...), counted from its arrival and covering all it
   * does; kept below Docker's 30 s call timeout after a plain enable.
   */
  mountTimeoutMs: number;
  /**
   * Megabytes the FUSE clients leave free on the filesystem of their temporary files (the state
   * directory's): s3fs's ensure_diskfree. 0: s3fs's own default (none).
   */
  fuseDiskFreeMb: number;
  /**
   * OSS volumes of one bucket with the same endpoint, credentials and client options share one
   * FUSE client, each volume a bind mount of its path in it. Off by default: the shared client
   * mounts the whole bucket, which credentials limited to a prefix may not be allowed to do.
   */
  shareClients: boolean;
  /** What an OSS volume created without `url` or credentials gets, so compose files name only a bucket. */
  ossDefaults: { url?: string; credentials?: string; client?: string };
  /**
   * Capabilities' Scope. `global` tells Docker (and swarm) that a volume name means the same data
   * on every host, which holds only when every host has the plugin, the profile and the same
   * endpoints; `local` (the default) makes each host's volumes its own.
   */
  scope: 'local' | 'global';
  /** Where Prometheus metrics are served; absent (the default) means no listener and no metrics code loaded. */
  metricsAddress?: ListenAddress;
  /** What cloud disk volumes (type=disk diskId=...) need of Alibaba Cloud. */
  cloud: CloudSettings;
  /**
   * Outbound proxies for the FUSE clients, the endpoint probe and the ECS API (never the metadata
   * service): see proxy.ts. Their URLs can hold credentials: never log this object.
   */
  proxy: ProxySettings;
}

export interface CloudSettings {
  /** The ECS metadata service: this instance's id and region, and its RAM role's STS credentials. */
  metadataUrl: string;
  /** The ECS API; absent: the VPC endpoint of the region the metadata service names. */
  ecsEndpoint?: string;
  /** Where the host's udev names block devices by their serial (host path). */
  deviceByIdDir: string;
  /** Credentials profile for the ECS API when a volume names none; absent: the instance's RAM role. */
  ecsCredentials?: string;
}

export interface ListenAddress {
  /** IP address or host name; '' means every interface. */
  host: string;
  port: number;
}

export const DEFAULTS = {
  OSSNAS_SOCKET: '/run/docker/plugins/ossnas.sock',
  OSSNAS_STATE_DIR: '/var/lib/ossnas',
  OSSNAS_MOUNT_ROOT: '/mnt/volumes',
  OSSNAS_CREDENTIALS_DIR: '/etc/ossnas/credentials',
  OSSNAS_RUN_DIR: '/run/ossnas',
  OSSNAS_HOST_PID: 'auto',
  OSSNAS_MOUNT_TIMEOUT: '20',
  OSSNAS_FUSE_DISKFREE: '512',
  OSSNAS_SHARE_CLIENTS: 'false',
  OSSNAS_DEFAULT_URL: '',
  OSSNAS_DEFAULT_CREDENTIALS: '',
  OSSNAS_DEFAULT_CLIENT: '',
  LOG_LEVEL: 'info',
  SCOPE: 'local',
  OSSNAS_METRICS_ADDRESS: '',
  OSSNAS_METADATA_URL: 'http://100.100.100.200',
  OSSNAS_ECS_ENDPOINT: '',
  OSSNAS_DEVICE_BY_ID_DIR: '/dev/disk/by-id',
  OSSNAS_ECS_CREDENTIALS: '',
  HTTP_PROXY: '',
  HTTPS_PROXY: '',
  NO_PROXY: '',
} as const;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export class SettingsError extends Error {}

/** `host:port`, `[v6]:port` or `:port` (every interface). */
function listenAddress(name: string, value: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]*)):([0-9]{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) {
    throw new SettingsError(`${name} must be host:port (e.g. 127.0.0.1:9464, or :9464 for every interface), got '${value}'`);
  }
  return { host: m[1] ?? m[2] ?? '', port };
}

/**
 * An endpoint setting as scheme://host[:port]. The value is not echoed: a malformed URL can still
 * hold a user:secret@ part, and this message goes to dockerd's log.
 */
function endpoint(name: string, value: string, example: string): string {
  try {
    return normalizeEndpoint(value);
  } catch {
    throw new SettingsError(`${name} must be http(s)://host[:port] (a bare host name means https), with no path and no user:password, e.g. ${example}`);
  }
}

function absolute(name: string, value: string): string {
  if (!path.isAbsolute(value)) throw new SettingsError(`${name} must be an absolute path, got '${value}'`);
  return path.normalize(value).replace(/(.)\/$/, '$1');
}

/**
 * HTTP_PROXY, HTTPS_PROXY and NO_PROXY; the lowercase names too (a plain host process may inherit
 * them from a shell), the uppercase one winning when both are set. Errors never echo a proxy
 * URL's credentials.
 */
function proxySettings(env: NodeJS.ProcessEnv, metadataUrl: string): ProxySettings {
  const pick = (name: 'HTTP_PROXY' | 'HTTPS_PROXY' | 'NO_PROXY'): [string, string] | undefined => {
    for (const n of [name, name.toLowerCase()]) {
      const v = env[n]?.trim();
      if (v) return [n, v];
    }
    return undefined;
  };
  try {
    const proxy = (name: 'HTTP_PROXY' | 'HTTPS_PROXY'): OutboundProxy | undefined => {
      const found = pick(name);
      return found && parseProxyUrl(found[0], found[1]);
    };
    const http = proxy('HTTP_PROXY');
    const https = proxy('HTTPS_PROXY');
    const no = pick('NO_PROXY');
    return {
      ...(http && { http }),
      ...(https && { https }),
      noProxy: effectiveNoProxy(no ? parseNoProxy(no[0], no[1]) : [], metadataUrl),
    };
  } catch (err) {
    if (err instanceof ProxySettingError) throw new SettingsError(err.message);
    throw err;
  }
}

/** libuv's own bound (MAX_THREADPOOL_SIZE): a larger value is silently cut to it. */
const MAX_THREADPOOL = 1024;

/**
 * UV_THREADPOOL_SIZE is not ours to default: libuv reads it itself (atoi, so an empty or junk
 * value is 0, which it turns into 1 thread) when its thread pool starts, and that is before our
 * code runs. Measured with dist/main.js on Node 20.20: with the variable empty, setting it in
 * process.env at the top of main.ts still left 1 pool thread after 20 concurrent Creates (8
 * threads in /proc/self/task against 71 with UV_THREADPOOL_SIZE=64 in the environment): the
 * ESM loader reads our modules through the pool before any of them runs. So an empty or
 * malformed value is refused here, and unset stays libuv's default of 4.
 */
function checkThreadpoolSize(value: string | undefined): void {
  if (value === undefined) return;
  const v = value.trim();
  const accepted = `a number of threads from 1 to ${MAX_THREADPOOL} (the plugin's default is 64)`;
  if (v === '') {
    throw new SettingsError(
      `UV_THREADPOOL_SIZE is empty, which Node's thread pool reads as 1 thread (it reads it before ossnas starts, so no default ` +
        `can take its place); set it to ${accepted}`,
    );
  }
  if (!/^[0-9]{1,5}$/.test(v) || Number(v) < 1 || Number(v) > MAX_THREADPOOL) {
    throw new SettingsError(`UV_THREADPOOL_SIZE must be ${accepted}, got '${value}'`);
  }
}

/**
 * Reads settings from the environment; an empty value means "use the default", except for
 * UV_THREADPOOL_SIZE (see checkThreadpoolSize).
 */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  checkThreadpoolSize(env.UV_THREADPOOL_SIZE);

  const get = (name: keyof typeof DEFAULTS): string => {
    const v = env[name]?.trim();
    return v ? v : DEFAULTS[name];
  };

  const hostPidRaw = get('OSSNAS_HOST_PID');
  let hostPid: HostPid;
  if (hostPidRaw === 'auto') hostPid = 'auto';
  else if (/^[1-9][0-9]*$/.test(hostPidRaw)) hostPid = Number(hostPidRaw);
  else throw new SettingsError(`OSSNAS_HOST_PID must be 'auto' or a process id, got '${hostPidRaw}'`);

  const logLevel = get('LOG_LEVEL').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new SettingsError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'`);
  }

  const timeoutRaw = get('OSSNAS_MOUNT_TIMEOUT');
  const timeoutS = Number(timeoutRaw);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(timeoutRaw) || timeoutS < 1 || timeoutS > 110) {
    throw new SettingsError(`OSSNAS_MOUNT_TIMEOUT must be seconds between 1 and 110, got '${timeoutRaw}'`);
  }

  const diskFreeRaw = get('OSSNAS_FUSE_DISKFREE');
  if (!/^[0-9]{1,7}$/.test(diskFreeRaw)) {
    throw new SettingsError(`OSSNAS_FUSE_DISKFREE must be megabytes (a whole number, 0 for none), got '${diskFreeRaw}'`);
  }

  const shareRaw = get('OSSNAS_SHARE_CLIENTS').toLowerCase();
  if (shareRaw !== 'true' && shareRaw !== 'false') {
    throw new SettingsError(`OSSNAS_SHARE_CLIENTS must be true or false, got '${shareRaw}'`);
  }

  const scope = get('SCOPE').toLowerCase();
  if (scope !== 'local' && scope !== 'global') throw new SettingsError(`SCOPE must be local or global, got '${scope}'`);

  const metadataUrl = endpoint('OSSNAS_METADATA_URL', get('OSSNAS_METADATA_URL'), 'http://100.100.100.200');
  return {
    socket: absolute('OSSNAS_SOCKET', get('OSSNAS_SOCKET')),
    stateDir: absolute('OSSNAS_STATE_DIR', get('OSSNAS_STATE_DIR')),
    mountRoot: absolute('OSSNAS_MOUNT_ROOT', get('OSSNAS_MOUNT_ROOT')),
    credentialsDir: absolute('OSSNAS_CREDENTIALS_DIR', get('OSSNAS_CREDENTIALS_DIR')),
    runDir: absolute('OSSNAS_RUN_DIR', get('OSSNAS_RUN_DIR')),
    hostPid,
    logLevel,
    mountTimeoutMs: Math.round(timeoutS * 1000),
    fuseDiskFreeMb: Number(diskFreeRaw),
    shareClients: shareRaw === 'true',
    // Checked by the OSS backend, which knows what an endpoint and a profile name are.
    ossDefaults: {
      ...(get('OSSNAS_DEFAULT_URL') && { url: get('OSSNAS_DEFAULT_URL') }),
      ...(get('OSSNAS_DEFAULT_CREDENTIALS') && { credentials: get('OSSNAS_DEFAULT_CREDENTIALS') }),
      ...(get('OSSNAS_DEFAULT_CLIENT') && { client: get('OSSNAS_DEFAULT_CLIENT') }),
    },
    scope,
    ...(get('OSSNAS_METRICS_ADDRESS') && { metricsAddress: listenAddress('OSSNAS_METRICS_ADDRESS', get('OSSNAS_METRICS_ADDRESS')) }),
    cloud: {
      metadataUrl,
      ...(get('OSSNAS_ECS_ENDPOINT') && {
        ecsEndpoint: endpoint('OSSNAS_ECS_ENDPOINT', get('OSSNAS_ECS_ENDPOINT'), 'ecs-vpc.cn-hangzhou.aliyuncs.com'),
      }),
      deviceByIdDir: absolute('OSSNAS_DEVICE_BY_ID_DIR', get('OSSNAS_DEVICE_BY_ID_DIR')),
      // A profile name is checked where profiles are read, as a volume's own would be.
      ...(get('OSSNAS_ECS_CREDENTIALS') && { ecsCredentials: get('OSSNAS_ECS_CREDENTIALS') }),
    },
    proxy: proxySettings(env, metadataUrl),
  };
}
