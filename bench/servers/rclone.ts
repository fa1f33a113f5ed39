// The anchor: rclone's Docker volume plugin (`rclone serve docker`, Debian's rclone) on a private
// unix socket, with its state file (docker-plugin.state in --cache-dir), config file and volume
// directories (--base-dir) in a private directory. Volumes are on rclone's `memory` backend: no
// network, and Create never mounts (rclone mounts at Mount, which the benchmark never calls).
// Given as remote=:memory:, not type=memory: rclone 1.60 records a type= volume with an empty
// "fs" and then fails to parse it when it restores its state ("cannot parse path \"\""), so
// after a restart it would list none of them.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { launch, type Launcher } from '../process.js';

const RCLONE = 'rclone';

export const rclone: Launcher = {
  name: 'rclone',
  createOpts: { remote: ':memory:' },
  persistent: true,
  stateDir: (dir) => path.join(dir, 'cache'),
  async start(dir) {
    await mkdir(path.join(dir, 'cache'), { recursive: true, mode: 0o700 });
    const config = path.join(dir, 'rclone.conf');
    await writeFile(config, '', { flag: 'a' }); // an empty config: the volumes name their backend
    const socket = path.join(dir, 'rclone.sock');
    return launch(
      RCLONE,
      [
        'serve', 'docker',
        '--socket-addr', socket,
        '--base-dir', path.join(dir, 'volumes'),
        '--cache-dir', path.join(dir, 'cache'),
        '--config', config,
        '--no-spec', // no /etc/docker/plugins/rclone.spec (only written for TCP sockets anyway)
      ],
      // HOME in the private directory: nothing rclone might look for in the real one is used.
      { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
      socket,
    );
  },
  async version() {
    try {
      const { stdout } = await promisify(execFile)(RCLONE, ['version']);
      return stdout.split('\n')[0] ?? 'rclone (unknown version)';
    } catch {
      throw new Error('rclone is not installed: apt-get install -y rclone (or leave it out with --servers)');
    }
  },
};
