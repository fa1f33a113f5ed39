// Where an OSS volume's keys come from: inline options, a named credentials profile, or, for a
// volume that names none (and is not a public bucket), the instance's RAM role.
import { cloudAccess } from '../cloud/access.js';
import { readProfile, type Credentials } from '../profiles.js';
import type { Settings } from '../../settings.js';
import type { OssSpec } from './options.js';

export type { Credentials } from '../profiles.js';

/**
 * The RAM role's current STS triple, from the metadata service (OSSNAS_METADATA_URL). The FUSE
 * client keeps the triple it starts with: see docs/volumes.md, "The instance's RAM role", on what that allows.
 */
export async function roleCredentials(settings: Settings, timeoutMs: number): Promise<Credentials> {
  const c = await cloudAccess(settings.cloud, settings.credentialsDir, settings.proxy).ramRole.fresh(timeoutMs);
  return { akId: c.accessKeyId, akSecret: c.accessKeySecret, securityToken: c.securityToken };
}

/** The credentials a volume names itself (inline or a profile); undefined for a public bucket or the RAM role. */
export async function resolveCredentials(spec: OssSpec, credentialsDir: string): Promise<Credentials | undefined> {
  if (spec.akId && spec.akSecret) {
    return { akId: spec.akId, akSecret: spec.akSecret, ...(spec.securityToken && { securityToken: spec.securityToken }) };
  }
  if (!spec.credentials) return undefined;
  return readProfile(credentialsDir, spec.credentials);
}
