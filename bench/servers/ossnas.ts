// ossnas itself: the built program (dist/main.js) as a plain host process, everything it keeps
// in a private directory, as test/helpers/plugin-process.ts starts it, with the node flags and the
// tuning environment of the plugin's config.json, so that it runs as the plugin does. Volumes are type=disk with
// size=16M: Create validates the options and records the volume (no image file, no mkfs, no
// mount, no network; those happen at Mount, which the benchmark never calls).
import { access, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, type Launcher } from '../process.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = path.join(REPO_ROOT, 'dist', 'main.js');

interface PluginConfig {
  entrypoint: string[];
  env: { name: string; value: string }[];
}

/** The node flags between node and main.js in config.json's entrypoint, and its UV_THREADPOOL_SIZE. */
async function asThePluginRuns(): Promise<{ nodeFlags: string[]; env: Record<string, string> }> {
  const config = JSON.parse(await readFile(path.join(REPO_ROOT, 'config.json'), 'utf8')) as PluginConfig;
  const node = config.entrypoint.findIndex((a) => a.endsWith('/node'));
  const main = config.entrypoint.findIndex((a) => a.endsWith('/main.js'));
  if (node < 0 || main < node) throw new Error(`config.json entrypoint has no node ... main.js: ${config.entrypoint.join(' ')}`);
  const env = Object.fromEntries(config.env.filter((e) => e.name === 'UV_THREADPOOL_SIZE').map((e) => [e.name, e.value]));
  return { nodeFlags: config.entrypoint.slice(node + 1, main), env };
}

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
    const plugin = await asThePluginRuns();
    return launch(
      process.execPath,
      [...plugin.nodeFlags, MAIN],
      {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        OSSNAS_SOCKET: socket,
        OSSNAS_STATE_DIR: path.join(dir, 'state'),
        OSSNAS_MOUNT_ROOT: path.join(dir, 'volumes'),
        OSSNAS_CREDENTIALS_DIR: path.join(dir, 'credentials'),
        OSSNAS_RUN_DIR: path.join(dir, 'run'),
        LOG_LEVEL: 'info', // the default: a line per Create and Remove (and per failure), none per Get or Path
        ...plugin.env,
      },
      socket,
    );
  },
  async version() {
    const pkg = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    return `ossnas ${pkg.version}, node ${process.version}`;
  },
};

/**
 * The same plugin with OSS volumes created with inline keys, as the outside harness of issue 18
 * did: their keys are kept apart from the state, so a Remove must still cost one small write.
 * Create checks the options and the keys' presence only (no request reaches the endpoint, which
 * is a closed port), and nothing is mounted.
 */
export const ossnasKeys: Launcher = {
  ...ossnas,
  name: 'ossnas-keys',
  createOpts: { type: 'oss', bucket: 'bench', url: 'http://127.0.0.1:9', akId: 'LTAIbenchkeyid000000', akSecret: 'bench-secret-not-a-real-one-0000' },
};
