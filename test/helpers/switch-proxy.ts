// A TCP proxy in front of a test server whose behaviour can be switched while it runs, to play a
// backend that is up, down (nothing listens: connections refused), blackholed (connections
// accepted and then never answered, as behind a firewall or a hung server) or slow (each
// connection forwarded only after a delay).
import { connect, createServer, type Server, type Socket } from 'node:net';

export type ProxyMode = 'forward' | 'down' | 'blackhole' | 'slow';

/** How long a connection waits in 'slow' mode before it is forwarded. */
export const SLOW_MS = 1500;

export interface SwitchProxy {
  port: number;
  setMode(mode: ProxyMode): Promise<void>;
  close(): Promise<void>;
}

export async function startSwitchProxy(targetPort: number, host = '127.0.0.1'): Promise<SwitchProxy> {
  const open = new Set<Socket>();
  let mode: ProxyMode = 'forward';
  let server: Server | undefined;
  const track = (s: Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => undefined);
  };
  const listen = (port: number) =>
    new Promise<number>((resolve) => {
      server = createServer((client) => {
        track(client);
        if (mode === 'blackhole') return; // held open, never answered
        const forward = () => {
          const upstream = connect(targetPort, host);
          track(upstream);
          upstream.on('error', () => client.destroy());
          client.pipe(upstream).pipe(client);
        };
        if (mode === 'slow') {
          client.pause(); // what the client sends waits with it
          setTimeout(forward, SLOW_MS);
        } else forward();
      });
      server.listen(port, host, () => resolve((server!.address() as { port: number }).port));
    });
  const stop = async () => {
    for (const s of open) s.destroy();
    if (server) await new Promise((resolve) => server!.close(resolve));
    server = undefined;
  };
  const port = await listen(0);
  return {
    port,
    async setMode(next) {
      if (next === 'down') await stop();
      else if (!server) await listen(port);
      mode = next;
    },
    close: stop,
  };
}
