// Option keys as users write them: case-insensitive, and snake_case, kebab-case and camelCase
// spellings are one key (`read-only`, `read_only`, `readOnly`, `READONLY`).
import { z } from 'zod';

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

const NO_CONTROL = /^[^\u0000-\u001f\u007f]*$/;

/**
 * A sub-path inside a bucket or an export: '/a/b/', 'a/b', '' -> '/a/b' or '/'. Refuses '..' and
 * '.', commas (a mount option separator) and control characters.
 */
export function normalizeSubPath(value: string): string {
  if (!NO_CONTROL.test(value) || value.includes(',') || value.includes('\\')) {
    throw new Error('a path must not contain commas, backslashes or control characters');
  }
  const parts = value.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..')) throw new Error("a path must not contain '.' or '..' segments");
  if (value.length > 1024) throw new Error('a path is at most 1024 characters');
  return parts.length ? `/${parts.join('/')}` : '/';
}

/**
 * A string option checked and normalised by `parse`: what it throws becomes the option's message
 * (describeIssues then names the key).
 */
export function parsedString<T>(parse: (value: string) => T, schema: z.ZodString = z.string()) {
  return schema.transform((v, ctx) => {
    try {
      return parse(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });
}

/** normalizeSubPath as a schema field. */
export const subPathOption = parsedString(normalizeSubPath);

/** parseBoolean as a schema field. */
export const booleanOption = z.string().transform((v, ctx) => {
  const b = parseBoolean(v);
  if (b === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected true or false, got '${v}'` });
    return z.NEVER;
  }
  return b;
});
