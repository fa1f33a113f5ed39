// One place that knows what a secret is and how to keep it out of text that leaves the plugin
// (log lines, {Err} messages, Status, child-process output).

/** Canonical option keys whose values are secrets. The access key id counts: it names an account. */
export const SECRET_OPTION_KEYS: readonly string[] = ['akId', 'akSecret', 'securityToken'];

export const REDACTED = '[redacted]';

/** pino redact paths: any secret option key at the top level or one or two levels down. */
export const LOG_REDACT_PATHS: string[] = SECRET_OPTION_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

/**
 * Replaces every occurrence of each secret value in `text`. Values shorter than 4 characters are
 * ignored so that a trivial value cannot blank out ordinary words.
 */
export function scrub(text: string, secrets: Iterable<string | undefined>): string {
  let out = text;
  const values = [...secrets].filter((s): s is string => typeof s === 'string' && s.length >= 4);
  // Longest first, so a secret that contains another is replaced whole.
  values.sort((a, b) => b.length - a.length);
  for (const v of values) out = out.split(v).join(REDACTED);
  return out;
}

/** The secret values found in an options map (canonical keys). */
export function secretValues(options: Record<string, string | undefined>): string[] {
  return SECRET_OPTION_KEYS.map((k) => options[k]).filter((v): v is string => !!v);
}
