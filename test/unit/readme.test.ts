// The README is the operator's guide: the lists in it that mirror code (volume options, the
// otherOpts allow-list, settings, metrics) must name exactly what the code accepts and exports.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { DISK_KEYS } from '../../src/backends/disk/options.js';
import { NAS_KEYS } from '../../src/backends/nas/options.js';
import { ALLOWED_OTHER_OPTS } from '../../src/backends/oss/other-opts.js';
import { OSS_KEYS } from '../../src/backends/oss/options.js';
import { DEFAULTS } from '../../src/settings.js';

const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');

/** The text of a `## ` or `### ` section, up to the next heading of the same or a higher level. */
function section(title: string): string {
  const m = new RegExp(`^(#{2,3}) ${title.replace(/[()/]/g, '\\$&')}\\n`, 'm').exec(readme);
  assert.ok(m, `README has no section '${title}'`);
  const rest = readme.slice(m.index + m[0].length);
  const next = new RegExp(`^#{2,${m[1]!.length}} `, 'm').exec(rest);
  return next ? rest.slice(0, next.index) : rest;
}

/** Names in the first column of a section's tables: `| \`a\`, \`b\` | ...`. */
function tableKeys(text: string): Set<string> {
  const keys = new Set<string>();
  for (const line of text.split('\n')) {
    const first = /^\| ([^|]+) \|/.exec(line)?.[1];
    if (first) for (const k of first.matchAll(/`([^`]+)`/g)) keys.add(k[1]!);
  }
  return keys;
}

describe('README', () => {
  it('documents every option of every volume type, in its own section', () => {
    for (const [title, keys] of [
      ['OSS / S3 volumes', OSS_KEYS],
      ['NAS volumes (NFS)', NAS_KEYS],
      ['Disk volumes', DISK_KEYS],
    ] as const) {
      const documented = tableKeys(section(title));
      assert.deepEqual(keys.filter((k) => !documented.has(k)), [], `${title}: options missing from its table`);
    }
  });

  it("lists exactly the otherOpts allow-list", () => {
    const row = readme.split('\n').find((l) => l.startsWith('| `otherOpts` |'));
    assert.ok(row, 'no otherOpts row');
    const s3fsList = /ships \(1\.90\): `([^`]+)`/.exec(row)?.[1];
    assert.ok(s3fsList, 'no s3fs list in the otherOpts row');
    const documented = [...s3fsList.split(' '), ...[...row.matchAll(/`([a-z_]+)` with ossfs only/g)].map((m) => m[1]!)];
    assert.deepEqual([...documented].sort(), [...ALLOWED_OTHER_OPTS].sort());
  });

  it('has a row for every setting of config.json and of the code', async () => {
    const config = JSON.parse(await readFile(new URL('../../config.json', import.meta.url), 'utf8')) as { env: Array<{ name: string }> };
    const documented = tableKeys(section('Settings'));
    const settings = new Set([...Object.keys(DEFAULTS), ...config.env.map((e) => e.name)]);
    assert.deepEqual([...settings].filter((k) => !documented.has(k)), []);
  });

  it('describes exactly the metrics the plugin exports', async () => {
    const source = await readFile(new URL('../../src/api/metrics.ts', import.meta.url), 'utf8');
    const exported = [...source.matchAll(/'(ossnas_[a-z_]+)'/g)].map((m) => m[1]!);
    assert.ok(exported.length >= 8, `found ${exported.length} metric names in metrics.ts`);
    assert.deepEqual([...tableKeys(section('Metrics'))].sort(), [...new Set(exported)].sort());
  });
});
