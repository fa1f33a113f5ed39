// The floor: bench/floor-server.ts, turned into plain JavaScript once (TypeScript's
// transpileModule) so that it starts and runs as ossnas's compiled dist/main.js does, without
// tsx's loader in its start time or its memory.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ts from 'typescript';
import { launch, type Launcher } from '../process.js';

const SOURCE = new URL('../floor-server.ts', import.meta.url);

async function compile(dir: string): Promise<string> {
  const js = path.join(dir, 'floor-server.mjs');
  const { outputText } = ts.transpileModule(await readFile(SOURCE, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
  });
  await writeFile(js, outputText);
  return js;
}

export const floor: Launcher = {
  name: 'floor',
  createOpts: { type: 'disk', size: '16M' }, // ignored; the same request bodies as ossnas gets
  persistent: false,
  stateDir: (dir) => path.join(dir, 'state'), // stays empty: no persistence
  async start(dir) {
    await mkdir(path.join(dir, 'state'), { recursive: true });
    const js = await compile(dir);
    const socket = path.join(dir, 'floor.sock');
    return launch(process.execPath, [js, socket, path.join(dir, 'volumes')], { PATH: process.env.PATH ?? '/usr/bin:/bin' }, socket);
  },
  async version() {
    return `node:http ${process.version}`;
  },
};
