// The ECS instance metadata service (100.100.100.200 on every ECS instance, OSSNAS_METADATA_URL
// here): which instance and region this host is, and the STS credentials of the RAM role attached
// to it. Always in IMDSv2 mode, as Alibaba Cloud recommends and a hardened instance requires: a
// session token is fetched with a PUT (which a forwarded or redirected request cannot make) and
// sent with every read.

/** Seconds a session token is asked for; it is used until a minute before that. */
const TOKEN_TTL_S = 3600;
const TOKEN_MARGIN_MS = 60_000;

export class MetadataError extends Error {}

export interface InstanceIdentity {
  instanceId: string;
  regionId: string;
  zoneId?: string;
}

/** The RAM role's credentials as the metadata service hands them out. */
export interface RoleCredentials {
  accessKeyId: string;
  accessKeySecret: string;
  securityToken: string;
  /** ms since the epoch */
  expiration: number;
  /** When the service minted them (ms since the epoch); the fetch time if it does not say. */
  issued: number;
}

export class MetadataService {
  private token: { value: string; until: number } | undefined;
  private identityKnown: InstanceIdentity | undefined;

  constructor(readonly baseUrl: string) {}

  /** This instance's id and region: fixed for the instance's life, so asked once. */
  async identity(timeoutMs: number): Promise<InstanceIdentity> {
    if (this.identityKnown) return this.identityKnown;
    const [instanceId, regionId, zoneId] = await Promise.all([
      this.get('instance-id', timeoutMs),
      this.get('region-id', timeoutMs),
      this.get('zone-id', timeoutMs).catch(() => undefined),
    ]);
    this.identityKnown = { instanceId, regionId, ...(zoneId && { zoneId }) };
    return this.identityKnown;
  }

  /** The attached RAM role's current STS credentials. */
  async roleCredentials(timeoutMs: number): Promise<RoleCredentials> {
    const role = (await this.get('ram/security-credentials/', timeoutMs, 'no RAM role is attached to this instance')).split('\n')[0]!.trim();
    if (!/^[A-Za-z0-9._@-]{1,64}$/.test(role)) throw new MetadataError(`the metadata service named no usable RAM role (got ${JSON.stringify(role.slice(0, 64))})`);
    const fetchedAt = Date.now();
    const text = await this.get(`ram/security-credentials/${role}`, timeoutMs, `RAM role ${role} is not attached to this instance`);
    // The body holds the secret: nothing of it goes into a message.
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new MetadataError(`the credentials of RAM role ${role} from the metadata service are not JSON`);
    }
    const field = (k: string) => (typeof doc[k] === 'string' && doc[k] ? (doc[k] as string) : undefined);
    const [accessKeyId, accessKeySecret, securityToken] = [field('AccessKeyId'), field('AccessKeySecret'), field('SecurityToken')];
    const expiration = Date.parse(field('Expiration') ?? '');
    if (field('Code') !== 'Success' || !accessKeyId || !accessKeySecret || !securityToken || Number.isNaN(expiration)) {
      throw new MetadataError(
        `the metadata service gave no usable credentials for RAM role ${role} (Code ${JSON.stringify(field('Code') ?? '')}; ` +
          'AccessKeyId, AccessKeySecret, SecurityToken and Expiration are needed)',
      );
    }
    const issued = Date.parse(field('LastUpdated') ?? '');
    return { accessKeyId, accessKeySecret, securityToken, expiration, issued: Number.isNaN(issued) ? fetchedAt : issued };
  }

  /** GET /latest/meta-data/<item> with a session token; a token the service no longer knows is renewed once. */
  async get(item: string, timeoutMs: number, on404?: string): Promise<string> {
    const url = `${this.baseUrl}/latest/meta-data/${item}`;
    for (let attempt = 0; ; attempt++) {
      const token = await this.sessionToken(timeoutMs);
      const res = await this.fetch(url, { headers: { 'X-aliyun-ecs-metadata-token': token } }, timeoutMs);
      if (res.status === 401 && attempt === 0) {
        this.token = undefined;
        continue;
      }
      const text = await res.text();
      if (res.ok) return text.trim();
      if (res.status === 404 && on404) throw new MetadataError(`${on404} (the metadata service answered 404 to ${item})`);
      throw new MetadataError(`the metadata service at ${this.baseUrl} answered ${res.status} to ${item}`);
    }
  }

  private async sessionToken(timeoutMs: number): Promise<string> {
    if (this.token && this.token.until > Date.now()) return this.token.value;
    const res = await this.fetch(
      `${this.baseUrl}/latest/api/token`,
      { method: 'PUT', headers: { 'X-aliyun-ecs-metadata-token-ttl-seconds': String(TOKEN_TTL_S) } },
      timeoutMs,
    );
    const value = (await res.text()).trim();
    if (!res.ok || !value) {
      throw new MetadataError(`the metadata service at ${this.baseUrl} gave no session token (IMDSv2): it answered ${res.status}`);
    }
    this.token = { value, until: Date.now() + TOKEN_TTL_S * 1000 - TOKEN_MARGIN_MS };
    return value;
  }

  /**
   * Always direct, never through HTTP_PROXY/HTTPS_PROXY: the service answers on the instance's own
   * link only, so no proxy could reach it for us (and a forwarded IMDSv2 PUT is refused by design).
   * Node's global fetch ignores *_PROXY (unless NODE_USE_ENV_PROXY is set, which nothing here does);
   * its host is in the NO_PROXY in force anyway (see proxy.ts), so the FUSE clients agree.
   */
  private async fetch(url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
    try {
      return await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(Math.max(1, Math.round(timeoutMs))) });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${Math.round(timeoutMs)} ms` : (e.cause?.code ?? e.message);
      throw new MetadataError(`the metadata service at ${this.baseUrl} cannot be reached (${why}); is this an ECS instance?`);
    }
  }
}
