// What most e2e files need before their first test: dockerd and the test image, optionally an S3
// server with a credentials profile `local` for it, and the plugin installed with private state
// and credentials directories. `cleanup` undoes it all in reverse order, the plugin first (it
// holds mounts of the S3 server and binds of the directories).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureBusyboxImage, installPlugin, requireDocker, type InstalledPlugin } from './docker.js';
import { tempDir } from './env.js';
import { startS3, type S3Server } from './s3.js';

export const LOCAL_PROFILE = 'local';

export interface E2eSetup {
  plugin: InstalledPlugin;
  /** Present when buckets were asked for. */
  s3: S3Server | undefined;
  stateDir: string;
  credentialsDir: string;
  cleanup(): Promise<void>;
}

export async function setUpPlugin(name: string, opts: { buckets?: string[]; env?: Record<string, string>; bundle?: string } = {}): Promise<E2eSetup> {
  await requireDocker();
  await ensureBusyboxImage();
  const undo: Array<() => Promise<unknown>> = [];
  const cleanup = async () => {
    const errors: unknown[] = [];
    for (const u of undo.reverse()) await u().catch((e: unknown) => errors.push(e));
    if (errors.length) throw new AggregateError(errors, `cleanup of the ${name} e2e setup failed`);
  };
  try {
    let s3: S3Server | undefined;
    if (opts.buckets) {
      const server = await startS3(opts.buckets);
      s3 = server;
      undo.push(() => server.stop());
    }
    const state = await tempDir(`${name}-state-`);
    const creds = await tempDir(`${name}-creds-`);
    undo.push(state.cleanup, creds.cleanup);
    await writeFile(path.join(creds.dir, LOCAL_PROFILE), 'akId=S3RVER\nakSecret=S3RVER\n', { mode: 0o600 });
    const plugin = await installPlugin(name, { stateDir: state.dir, credentialsDir: creds.dir, env: opts.env, bundle: opts.bundle });
    undo.push(() => plugin.cleanup());
    return { plugin, s3, stateDir: state.dir, credentialsDir: creds.dir, cleanup };
  } catch (err) {
    await cleanup().catch(() => undefined);
    throw err;
  }
}
