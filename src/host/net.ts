// Reaching a server before asking the kernel to: name resolution and a TCP connect, each with a
// short deadline, so a dead or unreachable server is reported in seconds rather than by a mount
// call that hangs until Docker gives up.
import { lookup } from 'node:dns/promises';
import { connect, isIP } from 'node:net';

export class UnreachableError extends Error {}

function deadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnreachableError(message)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** An IP address for `host` (itself when it is one). */
export async function resolveHost(host: string, timeoutMs: number): Promise<string> {
  if (isIP(host)) return host;
  const found = await deadline(
    lookup(host).catch((err: NodeJS.ErrnoException) => {
      throw new UnreachableError(`cannot resolve ${host}: ${err.code ?? err.message}`);
    }),
    timeoutMs,
    `cannot resolve ${host}: no answer within ${timeoutMs} ms`,
  );
  return found.address;
}

/** Resolves when something accepts a TCP connection on address:port; throws saying what happened. */
export async function probeTcp(address: string, port: number, timeoutMs: number): Promise<void> {
  const socket = connect({ host: address, port });
  try {
    await deadline(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', (err: NodeJS.ErrnoException) => {
          const why = err.code === 'ECONNREFUSED' ? 'refused the connection' : `is unreachable (${err.code ?? err.message})`;
          reject(new UnreachableError(`${address} port ${port} ${why}`));
        });
      }),
      timeoutMs,
      `${address} port ${port} did not answer within ${Math.round(timeoutMs / 100) / 10} s`,
    );
  } finally {
    socket.destroy();
  }
}
