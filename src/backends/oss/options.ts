// The `type=oss` option table (docs/volumes.md, "OSS / S3 volumes"), as a schema. Values are normalised so that the same
// volume written two ways compares equal (idempotent Create).
import { z } from 'zod';
import { booleanOption, canonicalizeKeys, describeIssues, OptionsError, parsedString, subPathOption } from '../options.js';
import { formatOtherOpts, parseOtherOpts, type OssClientName } from './other-opts.js';
import { PROFILE_NAME, PROFILE_NAME_RULE } from '../profiles.js';
import { normalizeEndpoint } from '../../endpoint.js';

export { normalizeEndpoint } from '../../endpoint.js';

export const OSS_KEYS = [
  'type',
  'bucket',
  'url',
  'path',
  'akId',
  'akSecret',
  'securityToken',
  'credentials',
  'uid',
  'gid',
  'umask',
  'readonly',
  'otherOpts',
  'client',
] as const;

export const OSS_CLIENTS: readonly OssClientName[] = ['s3fs', 'rclone'];

export interface OssSpec {
  bucket: string;
  url: string;
  /** '/' or '/a/b' */
  path: string;
  akId?: string;
  akSecret?: string;
  securityToken?: string;
  credentials?: string;
  /** No credentials of its own and not a public bucket: the keys are the instance's RAM role's. */
  ramRole: boolean;
  uid?: number;
  gid?: number;
  /** three octal digits */
  umask?: string;
  readonly: boolean;
  /** for the client's allow-list, canonical: `-o a=1 -o b` */
  otherOpts: string;
  /** s3fs (or ossfs, its fork, when the rootfs has it), or rclone mount */
  client: OssClientName;
}



const endpoint = parsedString(
  normalizeEndpoint,
  z.string({
    error: 'the endpoint, e.g. oss-cn-hangzhou.aliyuncs.com or http://127.0.0.1:9000 (or a plugin-wide default: docker plugin set ossnas OSSNAS_DEFAULT_URL=...)',
  }),
);

const id = z
  .string()
  .regex(/^[0-9]{1,10}$/, 'expected a whole number such as 1000')
  .transform(Number)
  .refine((n) => n <= 4294967294, 'expected a number below 4294967295');

const credentialValue = z
  .string()
  .min(1, 'must not be empty')
  .regex(/^[^\s:]+$/, 'must not contain spaces, newlines or colons');

const schema = z
  .object({
    type: z.literal('oss'),
    bucket: z
      .string({ error: 'the bucket to mount' })
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'a bucket name is 3-63 lowercase letters, digits, dots and hyphens'),
    url: endpoint,
    path: subPathOption.optional(),
    akId: credentialValue.optional(),
    akSecret: credentialValue.optional(),
    securityToken: z.string().regex(/^[^\s]+$/, 'must not be empty or contain spaces or newlines').optional(),
    credentials: z.string().regex(PROFILE_NAME, PROFILE_NAME_RULE).optional(),
    uid: id.optional(),
    gid: id.optional(),
    umask: z
      .string()
      .regex(/^0?[0-7]{1,3}$/, 'expected an octal mask such as 022 or 0002')
      .transform((v) => Number.parseInt(v, 8).toString(8).padStart(3, '0'))
      .optional(),
    readonly: booleanOption.optional(),
    otherOpts: z.string().optional(),
    client: z
      .string()
      .transform((v) => v.toLowerCase())
      .pipe(z.enum(OSS_CLIENTS, { error: `expected one of: ${OSS_CLIENTS.join(', ')}` }))
      .optional(),
  })
  .superRefine((o, ctx) => {
    const inline = o.akId !== undefined || o.akSecret !== undefined || o.securityToken !== undefined;
    if (inline && o.credentials !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['credentials'],
        message: 'give either credentials=PROFILE or akId/akSecret, not both',
      });
    }
    if (inline && (o.akId === undefined || o.akSecret === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [o.akId === undefined ? 'akId' : 'akSecret'],
        message: 'akId and akSecret go together',
      });
    }
  })
  // otherOpts is checked against the allow-list of the volume's own client.
  .transform((o, ctx) => {
    if (o.otherOpts === undefined) return o;
    try {
      return { ...o, otherOpts: formatOtherOpts(parseOtherOpts(o.otherOpts, o.client ?? 's3fs')) };
    } catch (e) {
      ctx.addIssue({ code: 'custom', path: ['otherOpts'], message: (e as Error).message.replace(/^invalid option 'otherOpts': /, '') });
      return z.NEVER;
    }
  });

/** What Create says when a volume with no credentials cannot use the instance's RAM role either. */
export const NO_CREDENTIALS_HELP =
  'give credentials=PROFILE (a file in the plugin credentials directory; preferred) ' +
  "or akId and akSecret (shown by 'docker volume inspect'), or otherOpts='-o public_bucket=1' for a public bucket; " +
  'or set a plugin-wide default profile: docker plugin set ossnas OSSNAS_DEFAULT_CREDENTIALS=PROFILE';

/**
 * Fills in the plugin-wide defaults (already validated) for what the options leave out: the
 * endpoint, and a profile when no credentials of any kind are given and the bucket is not public.
 */
export function withDefaults(raw: Record<string, string>, defaults: { url?: string; credentials?: string; client?: OssClientName }): Record<string, string> {
  const o = canonicalizeKeys(raw, OSS_KEYS, 'type=oss');
  const out = { ...o };
  if (o.url === undefined && defaults.url) out.url = defaults.url;
  if (o.client === undefined && defaults.client) out.client = defaults.client;
  const hasCredentials = ['akId', 'akSecret', 'securityToken', 'credentials'].some((k) => o[k] !== undefined);
  if (!hasCredentials && !isPublicBucket(o.otherOpts) && defaults.credentials) out.credentials = defaults.credentials;
  return out;
}

/** `-o public_bucket=1`: anonymous requests, no keys (s3fs's option; rclone volumes take it too). */
export function isPublicBucket(otherOpts: string | undefined): boolean {
  return /(^| )-o public_bucket=1( |$)/.test(otherOpts ?? '');
}

export function toSpec(raw: Record<string, string>): OssSpec {
  const options = canonicalizeKeys(raw, OSS_KEYS, 'type=oss');
  const result = schema.safeParse(options);
  if (!result.success) throw new OptionsError(describeIssues(result.error, options));
  const o = result.data;
  return {
    bucket: o.bucket,
    url: o.url,
    path: o.path ?? '/',
    ...(o.akId !== undefined && { akId: o.akId }),
    ...(o.akSecret !== undefined && { akSecret: o.akSecret }),
    ...(o.securityToken !== undefined && { securityToken: o.securityToken }),
    ...(o.credentials !== undefined && { credentials: o.credentials }),
    ramRole: o.akId === undefined && o.credentials === undefined && !isPublicBucket(o.otherOpts),
    ...(o.uid !== undefined && { uid: o.uid }),
    ...(o.gid !== undefined && { gid: o.gid }),
    ...(o.umask !== undefined && { umask: o.umask }),
    readonly: o.readonly ?? false,
    otherOpts: o.otherOpts ?? '',
    client: o.client ?? 's3fs',
  };
}

/** The normalised option map kept in state; defaults are written out so equal volumes compare equal. */
export function fromSpec(spec: OssSpec): Record<string, string> {
  const out: Record<string, string> = { type: 'oss', bucket: spec.bucket, url: spec.url, path: spec.path };
  if (spec.akId !== undefined) out.akId = spec.akId;
  if (spec.akSecret !== undefined) out.akSecret = spec.akSecret;
  if (spec.securityToken !== undefined) out.securityToken = spec.securityToken;
  if (spec.credentials !== undefined) out.credentials = spec.credentials;
  if (spec.uid !== undefined) out.uid = String(spec.uid);
  if (spec.gid !== undefined) out.gid = String(spec.gid);
  if (spec.umask !== undefined) out.umask = spec.umask;
  out.readonly = String(spec.readonly);
  if (spec.otherOpts) out.otherOpts = spec.otherOpts;
  // Written only for rclone: a volume with no client (all made before the option) is an s3fs one.
  if (spec.client !== 's3fs') out.client = spec.client;
  return out;
}
