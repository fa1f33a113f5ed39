// The three ECS API calls cloud disks need (DescribeDisks, AttachDisk, DetachDisk), through
// Alibaba Cloud's own SDK: it signs requests (ACS3-HMAC-SHA256) and speaks the wire format. This
// module gives each call the time its caller has left, and turns the SDK's errors into sentences
// that name the call, the code and the request ID, which is what Alibaba's support asks for.
//
// The SDK is large (about 70 MB of memory and half a second to load, for every ECS API model), so it
// is loaded at the first call, and hosts that have no cloud disk never load it.
import type { RoleCredentials } from './metadata.js';
import type { RamRoleCredentials } from './ram-role.js';
import type { Credentials } from '../profiles.js';
import { describeProxy, type OutboundProxy } from '../../proxy.js';
import { withProxy } from './sdk-proxy.js';

export class CloudApiError extends Error {
  constructor(
    message: string,
    /** The API's error code (InvalidDiskId.NotFound...), or undefined when no answer came. */
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** One disk as DescribeDisks shows it. */
export interface DiskState {
  diskId: string;
  /** In_use, Available, Attaching, Detaching, Creating, ReIniting */
  status: string;
  /** The instance it is attached to (or being attached to, or detached from); '' when none. */
  instanceId: string;
  /** The serial number the guest sees; '' when the API gives none. */
  serialNumber: string;
  regionId: string;
  zoneId: string;
}

/** Where the API's keys come from: a profile's static keys, or the instance's RAM role. */
export type ApiCredentials = { kind: 'profile'; keys: Credentials } | { kind: 'ramRole'; role: RamRoleCredentials };

type Sdk = {
  Client: typeof import('@alicloud/ecs20140526').default;
  models: typeof import('@alicloud/ecs20140526');
  Config: typeof import('@alicloud/openapi-core').$OpenApiUtil.Config;
  Credential: typeof import('@alicloud/credentials').default;
  RuntimeOptions: typeof import('@darabonba/typescript').RuntimeOptions;
};
function classOf(m: unknown): unknown {
  return typeof m === 'function' ? m : (m as { default: unknown }).default;
}

let sdk: Promise<Sdk> | undefined;
function loadSdk(): Promise<Sdk> {
  sdk ??= Promise.all([
    import('@alicloud/ecs20140526'),
    import('@alicloud/openapi-core'),
    import('@alicloud/credentials'),
    import('@darabonba/typescript'),
  ]).then(([ecs, core, cred, dara]) => ({
    // CommonJS packages: under Node the class sits on module.exports.default (the import's
    // default.default); loaders that unwrap that themselves (tsx) give it one level up.
    Client: classOf(ecs.default) as Sdk['Client'],
    models: ('DescribeDisksRequest' in ecs ? ecs : (ecs as { default: unknown }).default) as Sdk['models'],
    Config: core.$OpenApiUtil.Config,
    Credential: classOf(cred.default) as Sdk['Credential'],
    RuntimeOptions: dara.RuntimeOptions,
  }));
  return sdk;
}

export class EcsApi {
  constructor(
    /** scheme://host[:port] */
    readonly endpoint: string,
    readonly regionId: string,
    private readonly credentials: ApiCredentials,
    /** The proxy the API is reached through (HTTPS_PROXY/HTTP_PROXY, unless NO_PROXY covers it). */
    readonly proxy?: OutboundProxy,
  ) {}

  /** The disk, or undefined when this region has no disk of that ID (DescribeDisks answers an empty list). */
  async describeDisk(diskId: string, timeoutMs: number): Promise<DiskState | undefined> {
    const { models } = await loadSdk();
    const body = await this.call('DescribeDisks', timeoutMs, (client, runtime) =>
      client.describeDisksWithOptions(new models.DescribeDisksRequest({ regionId: this.regionId, diskIds: JSON.stringify([diskId]) }), runtime),
    );
    const d = body.body?.disks?.disk?.find((x) => x.diskId === diskId);
    if (!d) return undefined;
    // While attaching, ECS names the instance in Attachments before InstanceId: either will do.
    const instanceId = d.instanceId || d.attachments?.attachment?.[0]?.instanceId || '';
    return {
      diskId,
      status: d.status ?? '',
      instanceId,
      serialNumber: d.serialNumber ?? '',
      regionId: d.regionId ?? this.regionId,
      zoneId: d.zoneId ?? '',
    };
  }

  async attachDisk(diskId: string, instanceId: string, timeoutMs: number): Promise<void> {
    const { models } = await loadSdk();
    // The disk outlives the instance: a volume's data must not go with a released host.
    await this.call('AttachDisk', timeoutMs, (client, runtime) =>
      client.attachDiskWithOptions(new models.AttachDiskRequest({ diskId, instanceId, deleteWithInstance: false }), runtime),
    );
  }

  async detachDisk(diskId: string, instanceId: string, timeoutMs: number): Promise<void> {
    const { models } = await loadSdk();
    await this.call('DetachDisk', timeoutMs, (client, runtime) =>
      client.detachDiskWithOptions(new models.DetachDiskRequest({ diskId, instanceId }), runtime),
    );
  }

  /** One signed call. An STS token that the API says has expired is fetched anew and the call made once more. */
  private async call<T>(
    action: string,
    timeoutMs: number,
    fn: (client: InstanceType<Sdk['Client']>, runtime: InstanceType<Sdk['RuntimeOptions']>) => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    const left = () => Math.max(1, timeoutMs - (performance.now() - started));
    for (let attempt = 0; ; attempt++) {
      const { client, runtime } = await this.client(left());
      try {
        return await withProxy(this.proxy, this.endpoint, () => fn(client, runtime));
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (this.credentials.kind === 'ramRole' && attempt === 0 && typeof code === 'string' && code.startsWith('InvalidSecurityToken')) {
          this.credentials.role.forget();
          continue;
        }
        throw cloudError(action, this.endpoint, err, Math.round(left()), this.proxy);
      }
    }
  }

  private async client(timeoutMs: number) {
    const { Client, Config, Credential, RuntimeOptions } = await loadSdk();
    const url = new URL(this.endpoint);
    let keys: { accessKeyId: string; accessKeySecret: string; securityToken?: string };
    if (this.credentials.kind === 'profile') {
      const k = this.credentials.keys;
      keys = { accessKeyId: k.akId, accessKeySecret: k.akSecret, ...(k.securityToken && { securityToken: k.securityToken }) };
    } else {
      // Fetched here, within the caller's time, so that the SDK's own request for them is answered from memory.
      const c: RoleCredentials = await this.credentials.role.fresh(timeoutMs);
      keys = { accessKeyId: c.accessKeyId, accessKeySecret: c.accessKeySecret, securityToken: c.securityToken };
    }
    const config = new Config({
      endpoint: url.host,
      protocol: url.protocol.replace(':', ''),
      regionId: this.regionId,
      ...(this.credentials.kind === 'profile' ? keys : { credential: new Credential(null, this.credentials.role) }),
    });
    const ms = Math.max(1, Math.round(timeoutMs));
    return { client: new Client(config), runtime: new RuntimeOptions({ readTimeout: ms, connectTimeout: ms, autoretry: false }) };
  }
}

/**
 * The SDK throws ClientError/ServerError/ThrottlingError (with code, statusCode, requestId, and
 * data, the whole answer), a RequestTimeoutError, or a network error with an errno code. Its
 * messages hold the request's query string: ids, never keys (they travel in signed headers).
 */
export function cloudError(action: string, endpoint: string, err: unknown, timeoutMs: number, proxy?: OutboundProxy): CloudApiError {
  // A failure to connect is the proxy's when there is one: the endpoint was never tried from here.
  const where = proxy ? `${endpoint} through ${describeProxy(proxy)}` : endpoint;
  const e = err as { name?: string; code?: unknown; statusCode?: number; requestId?: string; data?: { Message?: unknown }; message?: string };
  if (typeof e.code === 'string' && typeof e.statusCode === 'number') {
    const message = typeof e.data?.Message === 'string' ? e.data.Message : '';
    return new CloudApiError(
      `ECS ${action} was refused: ${e.code} (HTTP ${e.statusCode})${message ? `: ${message}` : ''}${e.requestId ? ` (request ID ${e.requestId})` : ''}`,
      e.code,
    );
  }
  if (e.name === 'RequestTimeoutError' || /timeout/i.test(e.message ?? '')) {
    return new CloudApiError(`ECS ${action} did not answer within ${timeoutMs} ms (${where})`, undefined);
  }
  if (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) {
    return new CloudApiError(`ECS ${action} failed: the API at ${where} cannot be reached (${e.code})`, undefined);
  }
  // A body that is not the API's JSON (a proxy's error page), or a fault of ours: said as it is.
  return new CloudApiError(`ECS ${action} failed: ${e.message ?? String(err)} (${where})`, undefined);
}
