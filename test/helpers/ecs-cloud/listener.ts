// An HTTP server on 127.0.0.1 that can be taken down and brought back on the same port, as a
// service that goes away and returns: down means connections are refused (nothing listens), not
// accepted and dropped. Every socket is tracked so that down and close() also end the
// connections in progress, keep-alive and unanswered ones alike.
import { createServer, type RequestListener, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export class Listener {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private wantUp = false;
  private closed = false;
  private opening: Promise<void> | undefined;
  port = 0;

  constructor(handler: RequestListener) {
    this.server = createServer(handler);
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Listens (again). The port is bound within a tick of the call (Node binds an IP literal on the
   * next tick), so a connection attempted after the call returns finds it listening; the promise
   * is for errors. The port can be taken by another process while down: retried until it is free.
   */
  up(): Promise<void> {
    this.wantUp = true;
    this.opening ??= this.open().finally(() => (this.opening = undefined));
    return this.opening;
  }

  /** Stops listening at once and ends every connection: clients now get ECONNREFUSED. */
  down(): void {
    this.wantUp = false;
    if (this.server.listening) this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.down();
    await this.opening?.catch(() => {});
    this.down();
  }

  private async open(): Promise<void> {
    for (let attempt = 0; this.wantUp && !this.closed && !this.server.listening; attempt++) {
      try {
        await new Promise<void>((resolve, reject) => {
          const failed = (err: Error) => {
            this.server.off('listening', listening);
            reject(err);
          };
          const listening = () => {
            this.server.off('error', failed);
            resolve();
          };
          this.server.once('error', failed).once('listening', listening).listen(this.port, '127.0.0.1');
        });
        this.port = (this.server.address() as { port: number }).port;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 200) throw err;
        await sleep(50);
      }
    }
    // Taken down (or closed) while the bind was under way.
    if (!this.wantUp || this.closed) this.down();
  }
}
