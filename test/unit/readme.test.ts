// The README and docs/ are the operator's guide: the lists in them that mirror code (volume
// options, the otherOpts allow-list, settings, metrics) must name exactly what the code accepts
// and exports, and every relative link in them must lead to a file (and heading) that exists.
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DISK_KEYS } from '../../src/backends/disk/options.js';
import { NAS_KEYS } from '../../src/backends/nas/options.js';
import { ALLOWED_OTHER_OPTS } from '../../src/backends/oss/other-opts.js';
import { RCLONE_ALLOWED } from '../../src/backends/oss/rclone-opts.js';
import { OSS_KEYS } from '../../src/backends/oss/options.js';
import { DEFAULTS } from '../../src/settings.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string) => readFile(path.join(root, file), 'utf8');

const volumesDoc = await read('docs/volumes.md');
const settingsDoc = await read('docs/settings.md');
const operationsDoc = await read('docs/operations.md');
const readme = await read('README.md');

/** The text without fenced code blocks (a `# comment` in a shell block is not a heading). */
function withoutCode(text: string): string {
  let inCode = false;
  return text
    .split('\n')
    .map((line) => {
      if (line.startsWith('```')) {
        inCode = !inCode;
        return '';
      }
      return inCode ? '' : line;
    })
    .join('\n');
}

/** The text of a `## ` or `### ` section of `doc`, up to the next heading of the same or a higher level. */
function section(doc: string, file: string, title: string): string {
  const text = withoutCode(doc);
  const m = new RegExp(`^(#{2,3}) ${title.replace(/[()/]/g, '\\$&')}\\n`, 'm').exec(text);
  assert.ok(m, `${file} has no section '${title}'`);
  const rest = text.slice(m.index + m[0].length);
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

/** GitHub's anchor for a heading: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'. */
export function githubAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Every heading anchor of a markdown file, with GitHub's -1, -2 ... for repeated headings. */
function anchorsOf(text: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const m of withoutCode(text).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = githubAnchor(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Relative link targets in a markdown file, outside code (fenced blocks and `inline code`). */
function relativeLinks(text: string): string[] {
  const prose = withoutCode(text).replace(/`[^`\n]*`/g, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((m) => m[1]!)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target));
}

describe('docs and the code agree', () => {
  it('documents every option of every volume type, in its own section of docs/volumes.md', () => {
    for (const [title, keys] of [
      ['OSS / S3 volumes', OSS_KEYS],
      ['NAS volumes (NFS)', NAS_KEYS],
      ['Disk volumes', DISK_KEYS],
    ] as const) {
      const documented = tableKeys(section(volumesDoc, 'docs/volumes.md', title));
      assert.deepEqual(keys.filter((k) => !documented.has(k)), [], `${title}: options missing from its table`);
    }
  });

  it('lists exactly the otherOpts allow-list in docs/volumes.md', () => {
    const text = section(volumesDoc, 'docs/volumes.md', 'The otherOpts allow-list');
    const documented = new Set([...text.matchAll(/`([a-z_0-9]+)`/g)].map((m) => m[1]!));
    assert.ok(/With ossfs only[^\n]*`readdir_optimize`/.test(text), 'readdir_optimize is not marked as ossfs only');
    assert.deepEqual([...documented].sort(), [...new Set([...ALLOWED_OTHER_OPTS, ...Object.keys(RCLONE_ALLOWED)])].sort());
  });

  it('has a row in docs/settings.md for every setting of config.json and of the code', async () => {
    const config = JSON.parse(await read('config.json')) as { env: Array<{ name: string }> };
    const documented = tableKeys(section(settingsDoc, 'docs/settings.md', 'Settings'));
    const settings = new Set([...Object.keys(DEFAULTS), ...config.env.map((e) => e.name)]);
    assert.deepEqual([...settings].filter((k) => !documented.has(k)), []);
  });

  it("names in the README's settings summary only settings that docs/settings.md describes", () => {
    const documented = tableKeys(section(settingsDoc, 'docs/settings.md', 'Settings'));
    const summary = tableKeys(section(readme, 'README.md', 'Settings'));
    assert.ok(summary.size >= 8, `found ${summary.size} names in the README's settings summary`);
    assert.deepEqual([...summary].filter((k) => !documented.has(k)), []);
  });

  it('describes in docs/operations.md exactly the metrics the plugin exports', async () => {
    const source = await read('src/api/metrics.ts');
    const exported = [...source.matchAll(/'(ossnas_[a-z_]+)'/g)].map((m) => m[1]!);
    assert.ok(exported.length >= 8, `found ${exported.length} metric names in metrics.ts`);
    assert.deepEqual([...tableKeys(section(operationsDoc, 'docs/operations.md', 'Metrics'))].sort(), [...new Set(exported)].sort());
  });
});

describe('links in README.md and docs/', () => {
  it('computes anchors as GitHub does', () => {
    assert.equal(githubAnchor('OSS / S3 volumes'), 'oss--s3-volumes');
    assert.equal(githubAnchor('What the plugin asks for (config.json)'), 'what-the-plugin-asks-for-configjson');
    assert.equal(githubAnchor("The instance's RAM role"), 'the-instances-ram-role');
    assert.equal(githubAnchor('Protocol (`bench/protocol.ts`)'), 'protocol-benchprotocolts');
  });

  it('every relative link points at an existing file, and every #anchor at an existing heading', async () => {
    const files = ['README.md', ...(await readdir(path.join(root, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    assert.ok(files.length >= 8, `found ${files.length} markdown files`);
    const broken: string[] = [];
    let checked = 0;
    for (const file of files) {
      const text = await read(file);
      for (const link of relativeLinks(text)) {
        checked++;
        const [target = '', anchor] = link.split('#', 2);
        const resolved = target === '' ? path.join(root, file) : path.resolve(path.dirname(path.join(root, file)), target);
        if (!existsSync(resolved)) {
          broken.push(`${file}: ${link} (no such file)`);
          continue;
        }
        if (anchor === undefined || !resolved.endsWith('.md') || statSync(resolved).isDirectory()) continue;
        if (!anchorsOf(await readFile(resolved, 'utf8')).has(anchor)) broken.push(`${file}: ${link} (no such heading)`);
      }
    }
    assert.ok(checked >= 50, `found only ${checked} relative links`);
    assert.deepEqual(broken, []);
  });
});
