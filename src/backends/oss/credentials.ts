// Where an OSS volume's keys come from: inline options, or a named credentials profile.
import { readProfile, type Credentials } from '../profiles.js';
import type { OssSpec } from './options.js';

export type { Credentials } from '../profiles.js';

/** The credentials for a mount, or undefined for a public bucket. */
export async function resolveCredentials(spec: OssSpec, credentialsDir: string): Promise<Credentials | undefined> {
  if (spec.akId && spec.akSecret) {
    return { akId: spec.akId, akSecret: spec.akSecret, ...(spec.securityToken && { securityToken: spec.securityToken }) };
  }
  if (!spec.credentials) return undefined;
  return readProfile(credentialsDir, spec.credentials);
}
