// The key pairs the ECS API accepts: static RAM-user keys the test gives, and STS triples the
// metadata servers mint. An STS key is valid only with its own security token and only until its
// Expiration, as Alibaba Cloud's STS keys are.
import { randomBytes } from 'node:crypto';

export interface StsTriple {
  accessKeyId: string;
  accessKeySecret: string;
  securityToken: string;
  /** Epoch ms, whole seconds: exactly the Expiration the metadata server showed. */
  expiresAt: number;
}

export type KeyLookup =
  | { kind: 'static'; secret: string }
  | { kind: 'sts'; triple: StsTriple }
  | undefined;

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const alnum = (n: number) => [...randomBytes(n)].map((b) => ALNUM[b % ALNUM.length]).join('');

export class KeyRing {
  private readonly sts = new Map<string, StsTriple>();

  constructor(private readonly staticKeys: Record<string, string>) {}

  lookup(accessKeyId: string): KeyLookup {
    const secret = Object.hasOwn(this.staticKeys, accessKeyId) ? this.staticKeys[accessKeyId] : undefined;
    if (secret !== undefined) return { kind: 'static', secret };
    const triple = this.sts.get(accessKeyId);
    return triple && { kind: 'sts', triple };
  }

  /**
   * A new STS triple, shaped like real ones: 'STS.' + 24 alphanumerics, a 30-character secret, and a
   * long base64 token (with '+', '/' and '=': clients must carry it in a header untouched).
   */
  mint(expiresAt: number): StsTriple {
    const triple: StsTriple = {
      accessKeyId: `STS.${alnum(24)}`,
      accessKeySecret: alnum(30),
      securityToken: `CAIS${randomBytes(238).toString('base64')}`,
      expiresAt,
    };
    this.sts.set(triple.accessKeyId, triple);
    return triple;
  }
}
