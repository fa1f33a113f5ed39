// An error that nothing caught ends the process. Carrying on would serve calls from whatever the
// interrupted operation left half done: a record changed in memory and not on disk, a volume's
// lock never released, a mount made and not recorded. Exiting is safe, and it is how that state is
// repaired: kernel mounts (NAS, disk) live in the host's mount namespace and outlive the process;
// FUSE clients (OSS) leave the plugin's cgroup once their mount is ready, so the runtime does not
// kill them with it; dockerd restarts a managed plugin whose process exits (a plain host process
// has its service manager for that), and the start-up restore adopts every mount that still
// serves, from the state on disk, and mounts again those that containers hold and that do not.
import type { Logger } from './log.js';

/** The exit status after an uncaught error (2 is a bad setting). */
export const UNCAUGHT_EXIT_CODE = 1;

/**
 * Handlers that log the error (fatal, with its stack) and exit. `exit` is process.exit but for
 * tests; pino writes the line out before the process ends.
 */
export function fatalHandlers(log: Logger, exit: (code: number) => void = (code) => process.exit(code)) {
  let exiting = false;
  const handler = (kind: string) => (err: unknown) => {
    // A second error while the first is being handled (the log itself may be what fails):
    // the process is about to exit already.
    if (exiting) return;
    exiting = true;
    try {
      log.fatal({ err }, `${kind}; exiting, so that the plugin is started again from its state (mounts stay in place)`);
    } catch {
      // Nothing left to tell it with; exiting is what matters.
    }
    exit(UNCAUGHT_EXIT_CODE);
  };
  return { uncaughtException: handler('uncaught exception'), unhandledRejection: handler('unhandled rejection') };
}

export function exitOnUncaught(log: Logger): void {
  const h = fatalHandlers(log);
  process.on('uncaughtException', h.uncaughtException);
  process.on('unhandledRejection', h.unhandledRejection);
}
