// The instance's RAM role as a credentials source for Alibaba Cloud's SDKs (their
// CredentialsProvider interface). @alicloud/credentials has a provider of its own for this, but it
// always asks 100.100.100.200, so OSSNAS_METADATA_URL could not point it anywhere else; this one
// asks our MetadataService, and keeps the same refresh rule: new credentials well before the old
// ones expire, and the old ones kept while the service cannot be reached and they are still valid.
import { MetadataService, type RoleCredentials } from './metadata.js';

/**
 * Refreshed when less than this is left: at most 15 minutes (as the SDK does), and a third of their
 * life for credentials that live less than 45 minutes (ECS hands out 6-hour ones; tests, seconds).
 */
function refreshMargin(c: RoleCredentials): number {
  return Math.min(15 * 60_000, (c.expiration - c.issued) / 3);
}

/** What the SDK's Credential asks of a provider (@alicloud/credentials' CredentialsProvider). */
export interface SdkCredentials {
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly securityToken: string;
  readonly providerName: string;
}

export class RamRoleCredentials {
  static readonly providerName = 'ossnas_ecs_ram_role';
  private current: RoleCredentials | undefined;
  private pending: Promise<RoleCredentials> | undefined;

  constructor(
    private readonly metadata: MetadataService,
    /** For the SDK's own calls to getCredentials, which carry no deadline. */
    private readonly defaultTimeoutMs = 5000,
  ) {}

  /** Valid credentials, fetched or refreshed first if needed; call it within a deadline before an API call. */
  async fresh(timeoutMs: number): Promise<RoleCredentials> {
    const c = this.current;
    if (c && Date.now() < c.expiration - refreshMargin(c)) return c;
    try {
      return await this.refresh(timeoutMs);
    } catch (err) {
      // Still valid for a while: better used than a failed call (the service may be back by the next one).
      if (c && Date.now() < c.expiration - Math.min(30_000, (c.expiration - c.issued) / 10)) return c;
      throw err;
    }
  }

  /** The API said the token expired (clocks disagree, or the role was changed): fetch anew next time. */
  forget(): void {
    this.current = undefined;
  }

  private refresh(timeoutMs: number): Promise<RoleCredentials> {
    // One fetch at a time: concurrent mounts share it.
    this.pending ??= this.metadata.roleCredentials(timeoutMs).then(
      (c) => {
        this.pending = undefined;
        this.current = c;
        return c;
      },
      (err: unknown) => {
        this.pending = undefined;
        throw err;
      },
    );
    return this.pending;
  }

  // CredentialsProvider
  async getCredentials(): Promise<SdkCredentials> {
    const c = await this.fresh(this.defaultTimeoutMs);
    return { accessKeyId: c.accessKeyId, accessKeySecret: c.accessKeySecret, securityToken: c.securityToken, providerName: RamRoleCredentials.providerName };
  }

  getProviderName(): string {
    return RamRoleCredentials.providerName;
  }
}
