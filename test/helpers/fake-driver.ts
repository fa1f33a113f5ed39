// A real VolumeDriver over a FakeBackend, with a host double that reads the fake's mount table.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { VolumeDriver } from '../../src/driver/driver.js';
import type { StateOptions } from '../../src/driver/state.js';
import { MountUsersUnknown } from '../../src/host/mount-users.js';
import { FakeBackend } from './fake-backend.js';
import { memoryLogger, testSettings } from './env.js';

export async function fakeDriver(dir: string, fake = new FakeBackend(), stateOptions: StateOptions = {}) {
  const settings = testSettings(dir);
  await mkdir(settings.credentialsDir, { recursive: true });
  await writeFile(path.join(settings.credentialsDir, 'unused'), '');
  const { log, lines } = memoryLogger();
  const driver = await VolumeDriver.open(settings, new Map([['fake', fake]]), log, {
    isMountpoint: async (p) => fake.mounted.has(p),
    mountpoints: async () => new Set(fake.mounted),
    probe: async (p) =>
      fake.dead.has(p)
        ? { state: 'dead', reason: `${p}: ENOTCONN` }
        : fake.stuck.has(p)
          ? { state: 'unresponsive', reason: `no answer from ${p} within 2000 ms` }
          : { state: 'serving' },
    usage: async () => ({ totalBytes: 1 << 20, usedBytes: 1 << 18, usedPercent: 25 }),
    mountUsers: async (p) => {
      if (fake.usersUnknown) throw new MountUsersUnknown('the double cannot see every namespace');
      return fake.mounted.has(p) ? (fake.users.get(p) ?? []) : [];
    },
    // One reading of the double's namespaces, answered as of that moment.
    mountUsersAsOfNow: async () => {
      fake.namespaceReadings++;
      if (fake.usersUnknown) throw new MountUsersUnknown('the double cannot see every namespace');
      const [mounted, users] = [new Set(fake.mounted), new Map(fake.users)];
      return async (p) => (mounted.has(p) ? (users.get(p) ?? []) : []);
    },
    bootId: async () => fake.bootId,
  }, stateOptions);
  return { driver, fake, settings, lines };
}
