// Credentials profiles: named key files in the plugin's credentials directory (the host directory
// bound at OSSNAS_CREDENTIALS_DIR). Any volume type that calls a cloud API reads its keys here: read
// at Create to fail early, and again at every use, so a rotated profile is used. Values never leave
// this module except to the caller, which hands them on in memory (a 0600 file at most).
import { open } from 'node:fs/promises';
import path from 'node:path';
import { SettingsError } from '../settings.js';
import { foldKey, OptionsError } from './options.js';

export interface Credentials {
  akId: string;
  akSecret: string;
  securityToken?: string;
}

/** A credentials profile is a file name in the credentials directory: never a path. */
export const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
export const PROFILE_NAME_RULE = 'a profile name: letters, digits, dots, dashes, underscores';

/** A setting that names a profile (OSSNAS_DEFAULT_CREDENTIALS, OSSNAS_ECS_CREDENTIALS): SettingsError names it when it cannot be one. */
export function checkProfileSetting(setting: string, value: string): void {
  if (!PROFILE_NAME.test(value)) throw new SettingsError(`${setting}: expected ${PROFILE_NAME_RULE}, got '${value}'`);
}

const PROFILE_KEYS: Record<string, keyof Credentials> = {
  akid: 'akId',
  accesskeyid: 'akId',
  aksecret: 'akSecret',
  accesskeysecret: 'akSecret',
  securitytoken: 'securityToken',
};

/**
 * A profile is `key=value` lines (`#` comments): akId (or accessKeyId), akSecret (or
 * accessKeySecret), optionally securityToken. Key spellings fold as volume options do.
 */
export function parseProfile(text: string, name: string): Credentials {
  const found: Partial<Credentials> = {};
  text.split('\n').forEach((line, i) => {
    const l = line.trim();
    if (!l || l.startsWith('#')) return;
    const eq = l.indexOf('=');
    if (eq < 1) throw new OptionsError(`credentials profile '${name}' line ${i + 1} is not key=value`);
    const key = PROFILE_KEYS[foldKey(l.slice(0, eq).trim())];
    if (!key) {
      throw new OptionsError(
        `credentials profile '${name}' line ${i + 1} has an unknown key; accepted: akId, akSecret, securityToken`,
      );
    }
    const value = l.slice(eq + 1).trim();
    if (!value || /[\s:]/.test(value)) {
      throw new OptionsError(`credentials profile '${name}': ${key} is empty or contains spaces or colons`);
    }
    found[key] = value;
  });
  if (!found.akId || !found.akSecret) {
    throw new OptionsError(`credentials profile '${name}' must set both akId and akSecret`);
  }
  return found as Credentials;
}

/** Reads profile `name` from `dir`, refusing one that another user owns or can read. */
export async function readProfile(dir: string, name: string): Promise<Credentials> {
  const file = path.join(dir, name);
  let text: string;
  let mode: number;
  let owner: number;
  try {
    // One open for the owner, the mode and the content, so the text checked is the text read.
    const fh = await open(file, 'r');
    try {
      ({ mode, uid: owner } = await fh.stat());
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new OptionsError(
      code === 'ENOENT'
        ? `credentials profile '${name}' not found: no file ${file} in the plugin's credentials directory ` +
            `(OSSNAS_CREDENTIALS_DIR; on the host, the source of the plugin's 'credentials' mount)`
        : `credentials profile '${name}' cannot be read (${code ?? 'error'})`,
    );
  }
  // A profile another user owns is one that user can change (chmod, or rewrite it): keys of
  // theirs would send a volume's data to a bucket of theirs. Only the plugin's own user may own it.
  const me = process.geteuid?.() ?? 0;
  if (owner !== me) {
    const us = me === 0 ? 'root' : `uid ${me}`;
    throw new OptionsError(
      `credentials profile '${name}' is owned by uid ${owner}, not by ${us}, the plugin's user: ` +
        `its owner could change the keys; on the host: chown ${me === 0 ? 'root:root' : me} on the file ` +
        `(${file} in the plugin), and check that its content is yours`,
    );
  }
  // Keys that other users can read are leaked, and keys they can change send data elsewhere.
  if ((mode & 0o066) !== 0) {
    throw new OptionsError(
      `credentials profile '${name}' can be read or changed by users other than its owner ` +
        `(mode ${(mode & 0o777).toString(8).padStart(4, '0')}); on the host: chmod 600 on the file ` +
        `(${file} in the plugin)`,
    );
  }
  return parseProfile(text, name);
}
