// An error nothing caught ends the process, logged: a process that carried on would serve calls
// from half-changed state. No honest way was found to make the real program (dist/main.js) throw
// one from outside, so this runs the handlers of src/fatal.ts, which main.ts installs, in a child
// process of their own with the real logger, as main.ts does.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fatalHandlers } from '../../src/fatal.js';
import { memoryLogger } from '../helpers/env.js';
import { REPO_ROOT } from '../helpers/plugin-process.js';

const src = (f: string) => pathToFileURL(path.join(REPO_ROOT, 'src', f)).href;

/** Runs `body` after the handlers are installed, in a process kept alive as the server keeps it. */
async function runChild(body: string): Promise<{ code: number | string | null; stdout: string; stderr: string }> {
  const code = [
    `import { createLogger } from '${src('log.ts')}';`,
    `import { exitOnUncaught } from '${src('fatal.ts')}';`,
    `exitOnUncaught(createLogger('info'));`,
    'setInterval(() => {}, 1000);',
    body,
  ].join('\n');
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += String(c)));
  child.stderr.on('data', (c) => (stderr += String(c)));
  const exit = await new Promise<number | string | null>((res) => {
    const timer = setTimeout(() => (child.kill('SIGKILL'), res('still running after 15 s')), 15_000);
    child.once('exit', (c) => (clearTimeout(timer), res(c)));
  });
  return { code: exit, stdout, stderr };
}

describe('an error nothing caught', () => {
  for (const [kind, body, message] of [
    ['uncaught exception', "setTimeout(() => { throw new Error('boom in a timer'); }, 100);", 'boom in a timer'],
    ['unhandled rejection', "setTimeout(() => { void Promise.reject(new Error('lost promise')); }, 100);", 'lost promise'],
  ] as const) {
    it(`${kind}: logged as fatal with the error, then the process exits with status 1`, async () => {
      const r = await runChild(body);
      assert.equal(r.code, 1, `exit status; stderr: ${r.stderr}`);
      const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string; err?: { message: string; stack: string } });
      const fatal = lines.find((l) => l.level === 60);
      assert.ok(fatal, `a fatal line: ${r.stdout}`);
      assert.match(fatal.msg, new RegExp(`^${kind}; exiting, so that the plugin is started again from its state`));
      assert.equal(fatal.err?.message, message);
      assert.match(fatal.err!.stack, new RegExp(message));
    });
  }

  it('exits once, even when a second error comes, or when logging it fails', () => {
    const { log, lines } = memoryLogger();
    const exits: number[] = [];
    const h = fatalHandlers(log, (code) => exits.push(code));
    h.uncaughtException(new Error('first'));
    h.unhandledRejection(new Error('second'));
    assert.deepEqual(exits, [1]);
    assert.equal(lines.length, 1);

    const broken = { fatal: () => { throw new Error('EIO writing the log'); } } as unknown as typeof log;
    const exits2: number[] = [];
    fatalHandlers(broken, (code) => exits2.push(code)).uncaughtException(new Error('x'));
    assert.deepEqual(exits2, [1]);
  });
});
