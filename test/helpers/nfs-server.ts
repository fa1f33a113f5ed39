// The NFS server of the guest that scripts/nfs-guest.sh boots, and the ways the tests take it
// away: stopped (connections refused), or frozen (something in its place that accepts
// connections and never answers, as a hung server or a firewall that drops replies does).
import { createServer, type Server, type Socket } from 'node:net';
import { execa } from 'execa';

/** Serves the guest's exports again, or stops serving them (no nfsd threads: connections are refused). */
export const nfsd = (action: 'start' | 'stop') => execa('/usr/local/sbin/ossnas-nfsd', [action]);

/** Something at 127.0.0.1:port that accepts connections and never answers: a hung server. */
export async function silentServer(port: number): Promise<{ close(): void }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => sockets.add(s));
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    close: () => {
      for (const s of sockets) s.destroy(); // else the clients would wait on them for ever
      if (server.listening) server.close();
    },
  };
}
