// Reading the plugin's Prometheus endpoint in tests.

/** `name{labels} value` lines of a Prometheus text exposition, keyed by everything before the value. */
export function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    m.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return m;
}

/** GET http://127.0.0.1:PORT/metrics, parsed; throws unless it answers 200 with Prometheus text. */
export async function scrapeMetrics(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await res.text();
  if (res.status !== 200 || !/^text\/plain/.test(res.headers.get('content-type') ?? '')) {
    throw new Error(`metrics on port ${port} answered ${res.status} ${res.headers.get('content-type')}: ${text.slice(0, 200)}`);
  }
  return parseMetrics(text);
}
