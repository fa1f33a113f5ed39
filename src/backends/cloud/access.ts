// What a backend needs to call Alibaba Cloud from this host: who this instance is, and an ECS API
// client with the right keys. Keys come, in this order, from the volume's own credentials
// profile, the plugin-wide one (OSSNAS_ECS_CREDENTIALS), or the instance's RAM role.
import { proxyFor, type ProxySettings } from '../../proxy.js';
import type { CloudSettings } from '../../settings.js';
import { readProfile } from '../profiles.js';
import { EcsApi } from './ecs.js';
import { MetadataService, type InstanceIdentity } from './metadata.js';
import { RamRoleCredentials } from './ram-role.js';

export class CloudAccess {
  readonly metadata: MetadataService;
  readonly ramRole: RamRoleCredentials;

  constructor(
    readonly settings: CloudSettings,
    private readonly credentialsDir: string,
    /** For the ECS API only: the metadata service is always reached directly (see metadata.ts). */
    private readonly proxy?: ProxySettings,
  ) {
    this.metadata = new MetadataService(settings.metadataUrl);
    this.ramRole = new RamRoleCredentials(this.metadata);
  }

  identity(timeoutMs: number): Promise<InstanceIdentity> {
    return this.metadata.identity(timeoutMs);
  }

  /** The profile a volume's API calls use; undefined: the RAM role. */
  profileFor(volumeProfile: string | undefined): string | undefined {
    return volumeProfile ?? this.settings.ecsCredentials;
  }

  /** An ECS client for this instance's region, with keys read now (a rotated profile is used at once). */
  async ecs(volumeProfile: string | undefined, timeoutMs: number): Promise<EcsApi> {
    const { regionId } = await this.identity(timeoutMs);
    const endpoint = this.settings.ecsEndpoint ?? `https://ecs-vpc.${regionId}.aliyuncs.com`;
    const profile = this.profileFor(volumeProfile);
    const proxy = proxyFor(endpoint, this.proxy);
    if (profile === undefined) return new EcsApi(endpoint, regionId, { kind: 'ramRole', role: this.ramRole }, proxy);
    return new EcsApi(endpoint, regionId, { kind: 'profile', keys: await readProfile(this.credentialsDir, profile) }, proxy);
  }
}

const byConfig = new Map<string, CloudAccess>();
/** One per settings in a process: the metadata session and the role's credentials are shared by every volume. */
export function cloudAccess(settings: CloudSettings, credentialsDir: string, proxy?: ProxySettings): CloudAccess {
  const key = JSON.stringify([settings, credentialsDir, proxy]);
  let access = byConfig.get(key);
  if (!access) {
    access = new CloudAccess(settings, credentialsDir, proxy);
    byConfig.set(key, access);
  }
  return access;
}
