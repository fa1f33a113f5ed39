// Talks to a plugin socket exactly as dockerd does: POST, no Content-Type, the Accept header of
// plugin API v1.2, JSON encoded with a trailing newline, keep-alive connections.
import http from 'node:http';

export interface Reply {
  status: number;
  contentType: string | undefined;
  text: string;
  json: Record<string, unknown>;
}

export class PluginClient {
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

  constructor(readonly socket: string) {}

  /** `body` undefined sends an empty body (as Plugin.Activate does); a string is sent as is. */
  raw(path: string, body?: string, method = 'POST'): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
      const req = http.request(
        {
          socketPath: this.socket,
          agent: this.agent,
          method,
          path,
          headers: {
            Host: 'plugin.moby.localhost',
            Accept: 'application/vnd.docker.plugins.v1.2+json',
            'Content-Length': data.length,
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            let json: Record<string, unknown> = {};
            try {
              json = JSON.parse(text) as Record<string, unknown>;
            } catch {
              // left empty; tests assert on text where it matters
            }
            resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text, json });
          });
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  }

  call(method: string, args?: unknown): Promise<Reply> {
    return this.raw(`/${method}`, args === undefined ? undefined : JSON.stringify(args) + '\n');
  }

  close(): void {
    this.agent.destroy();
  }
}
