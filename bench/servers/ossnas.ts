// ossnas itself: the built program (dist/main.js) as a plain host process, everything it keeps
// in a private directory, as test/helpers/plugin-process.ts starts it. Volumes are type=disk with
// size=16M: Create validates the options and records the volume (no image file, no mkfs, no
// mount, no network; those happen at Mount, which the benchmark never calls).
import { access, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, type Launcher } from '../process.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = path.join(REPO_ROOT, 'dist', 'main.js');

export const ossnas: Launcher = {
  name: 'ossnas',
  createOpts: { type: 'disk', size: '16M' },
  persistent: true,
  stateDir: (dir) => path.join(dir, 'state'),
  async start(dir) {
    await access(MAIN).catch(() => {
      throw new Error(`${MAIN} does not exist: run \`npm run build\` first`);
    });
    await mkdir(path.join(dir, 'credentials'), { recursive: true });
    const socket = path.join(dir, 'ossnas.sock');
    return launch(
      process.execPath,
      [MAIN],
      {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        OSSNAS_SOCKET: socket,
        OSSNAS_STATE_DIR: path.join(dir, 'state'),
        OSSNAS_MOUNT_ROOT: path.join(dir, 'volumes'),
        OSSNAS_CREDENTIALS_DIR: path.join(dir, 'credentials'),
        OSSNAS_RUN_DIR: path.join(dir, 'run'),
        LOG_LEVEL: 'info', // the default: one line per Create/Remove, Get/Path/List at debug
        UV_THREADPOOL_SIZE: '64', // as config.json sets it
      },
      socket,
    );
  },
  async version() {
    const pkg = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    return `ossnas ${pkg.version}, node ${process.version}`;
  },
};
