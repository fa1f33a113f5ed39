// Option keys as users write them: case-insensitive, and snake_case, kebab-case and camelCase
// spellings are one key (`read-only`, `read_only`, `readOnly`, `READONLY`).
import type { z } from 'zod';

/** A bad volume option. The message names the key and says what is accepted. */
export class OptionsError extends Error {}

export function foldKey(key: string): string {
  return key.toLowerCase().replace(/[-_]/g, '');
}

/**
 * Maps each raw key to its canonical spelling from `known`. Unknown keys and a key given twice
 * (in two spellings) are errors that list what is accepted.
 */
export function canonicalizeKeys(
  raw: Record<string, string>,
  known: readonly string[],
  context: string,
): Record<string, string> {
  const byFold = new Map(known.map((k) => [foldKey(k), k]));
  const out: Record<string, string> = {};
  const spelledAs: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    const canonical = byFold.get(foldKey(key));
    if (!canonical) {
      throw new OptionsError(`unknown option '${key}' for ${context}; accepted options: ${known.join(', ')}`);
    }
    if (canonical in out) {
      throw new OptionsError(`option '${canonical}' is given twice (as '${spelledAs[canonical]}' and '${key}')`);
    }
    if (typeof value !== 'string') throw new OptionsError(`option '${key}' must be a string`);
    out[canonical] = value;
    spelledAs[canonical] = key;
  }
  return out;
}

/** Turns a zod failure into one sentence per problem, each naming its option. */
export function describeIssues(error: z.ZodError, raw: Record<string, unknown>): string {
  return error.issues
    .map((issue) => {
      const key = issue.path.length ? String(issue.path[0]) : '';
      if (!key) return issue.message;
      if (raw[key] === undefined) return `option '${key}' is required: ${issue.message}`;
      return `invalid option '${key}': ${issue.message}`;
    })
    .join('; ');
}

/** Values such as `true`, `1`, `yes`; anything else is refused rather than guessed. */
export function parseBoolean(value: string): boolean | undefined {
  const v = value.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off', ''].includes(v)) return false;
  return undefined;
}
