// One instance's metadata service (100.100.100.200 on ECS), IMDSv2 only, as a hardened
// instance has it: a token first (PUT /latest/api/token), then GETs that carry it. The RAM role's
// STS triple is served until it nears its Expiration, then a new one is minted, as ECS rotates
// them ahead of expiry; the ECS API accepts each triple until its own Expiration.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KeyRing, StsTriple } from './keys.js';
import { Listener } from './listener.js';
import { isoSeconds } from './wire.js';

export interface SimInstance {
  readonly id: string;
  /** 'http://127.0.0.1:PORT': what stands for http://100.100.100.200. */
  readonly metadataUrl: string;
  /** The instance's /dev/disk/by-id: where links to its attached disks appear. */
  readonly byIdDir: string;
  /** How many distinct STS triples its metadata service has handed out. */
  readonly credentialsIssued: number;
  /** The metadata service stops listening (connections refused) ... */
  stopMetadata(): void;
  /** ... and listens again, on the same port. */
  startMetadata(): Promise<void>;
}

export interface MetadataOptions {
  id: string;
  regionId: string;
  zoneId: string;
  byIdDir: string;
  /** null: the instance has no RAM role. */
  roleName: string | null;
  credentialTtlMs: number;
  keys: KeyRing;
}

const MAX_TOKEN_TTL_S = 21600;
/** ECS hands out a new triple when the current one is this close to its Expiration, or a third of its lifetime if less. */
const ROTATE_BEFORE_MS = 15 * 60_000;

export class InstanceMetadata implements SimInstance {
  private readonly listener = new Listener((req, res) => this.serve(req, res));
  private readonly tokens = new Map<string, number>();
  private current: { triple: StsTriple; issuedAt: number } | undefined;
  credentialsIssued = 0;

  private constructor(private readonly o: MetadataOptions) {}

  static async start(o: MetadataOptions): Promise<InstanceMetadata> {
    const m = new InstanceMetadata(o);
    await m.listener.up();
    return m;
  }

  get id(): string {
    return this.o.id;
  }
  get byIdDir(): string {
    return this.o.byIdDir;
  }
  get metadataUrl(): string {
    return this.listener.url;
  }

  stopMetadata(): void {
    this.listener.down();
  }
  startMetadata(): Promise<void> {
    return this.listener.up();
  }
  close(): Promise<void> {
    return this.listener.close();
  }

  /** The role's triple now: the current one, or a new one if the current is due for rotation. */
  private credentials(now: number): StsTriple {
    const c = this.current;
    if (c) {
      const lead = Math.min(ROTATE_BEFORE_MS, this.o.credentialTtlMs / 3);
      if (now < c.triple.expiresAt - lead) return c.triple;
    }
    // Expiration has whole seconds on the wire; the API enforces exactly what was shown.
    const expiresAt = Math.floor((now + this.o.credentialTtlMs) / 1000) * 1000;
    this.current = { triple: this.o.keys.mint(expiresAt), issuedAt: now };
    this.credentialsIssued++;
    return this.current.triple;
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    const send = (status: number, body = '', type = 'text/plain') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const now = Date.now();
    const url = (req.url ?? '/').split('?')[0]!;
    if (url === '/latest/api/token') {
      if (req.method !== 'PUT') return send(405);
      const ttl = String(req.headers['x-aliyun-ecs-metadata-token-ttl-seconds'] ?? '');
      if (!/^\d+$/.test(ttl) || Number(ttl) < 1 || Number(ttl) > MAX_TOKEN_TTL_S) return send(400);
      for (const [t, exp] of this.tokens) if (exp <= now) this.tokens.delete(t);
      const token = randomBytes(36).toString('base64url');
      this.tokens.set(token, now + Number(ttl) * 1000);
      return send(200, token);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405);
    // v1 (no token) is disabled on this instance: refused, not answered.
    const token = req.headers['x-aliyun-ecs-metadata-token'];
    if (token === undefined) return send(403);
    const exp = typeof token === 'string' ? this.tokens.get(token) : undefined;
    if (exp === undefined || exp <= now) return send(401);

    const role = this.o.roleName;
    const meta: Record<string, () => string | undefined> = {
      '/latest/meta-data/instance-id': () => this.o.id,
      '/latest/meta-data/region-id': () => this.o.regionId,
      '/latest/meta-data/zone-id': () => this.o.zoneId,
      '/latest/meta-data/ram/security-credentials/': () => role ?? undefined,
      '/latest/meta-data/ram/security-credentials': () => role ?? undefined,
      '/latest/dynamic/instance-identity/document': () =>
        JSON.stringify({ 'instance-id': this.o.id, 'region-id': this.o.regionId, 'zone-id': this.o.zoneId, 'serial-number': this.o.id }),
    };
    const plain = meta[url]?.();
    if (plain !== undefined) return send(200, plain, url.includes('/dynamic/') ? 'application/json' : 'text/plain');
    if (role !== null && url === `/latest/meta-data/ram/security-credentials/${role}`) {
      const t = this.credentials(now);
      const body = {
        AccessKeyId: t.accessKeyId,
        AccessKeySecret: t.accessKeySecret,
        SecurityToken: t.securityToken,
        Expiration: isoSeconds(t.expiresAt),
        LastUpdated: isoSeconds(this.current!.issuedAt),
        Code: 'Success',
      };
      return send(200, JSON.stringify(body), 'application/json');
    }
    return send(404);
  }
}
