// What every benchmark of the built program checks and records: dist/ is current, which
// revision it was built from, and the machine it ran on.
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from './servers/ossnas.js';

/** dist/ must be newer than every source file, or the benchmark would measure old code. */
export async function checkBuild(): Promise<void> {
  const main = path.join(REPO_ROOT, 'dist', 'main.js');
  const built = await stat(main).catch(() => undefined);
  if (!built) throw new Error('dist/main.js does not exist: run `npm run build` first');
  const newest = async (dir: string): Promise<number> => {
    let t = 0;
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? await newest(p) : (await stat(p)).mtimeMs);
    }
    return t;
  };
  if ((await newest(path.join(REPO_ROOT, 'src'))) > built.mtimeMs) {
    throw new Error('src/ changed after dist/ was built: run `npm run build` first');
  }
}

export function gitRevision(): string {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${rev} (src modified)` : rev;
  } catch {
    return 'unknown';
  }
}

/** The head of every benchmark's JSON report: when, which code, on what machine. */
export function runMeta(started: Date): { date: string; revision: string; cpus: number; cpuModel: string; kernel: string } {
  return {
    date: started.toISOString(),
    revision: gitRevision(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    kernel: os.release(),
  };
}
