// The plugin's own log lines, as dockerd copies a managed plugin's output into its log: one
// `call` line per VolumeDriver call with the plugin's own time for it (bench/docker-run.ts,
// bench/burst.ts).
import { readFile } from 'node:fs/promises';

/** Wall-clock time in ms with sub-ms resolution, comparable with the plugin's log timestamps. */
export const wallNow = () => performance.timeOrigin + performance.now();

export interface PluginCall {
  call: string;
  volume: string | undefined;
  ms: number;
  status: number;
  /** The error the plugin answered with, when it failed. */
  err?: string;
  /** Wall clock (ms since the epoch) when the plugin answered (its log line's time, +0.5 for the ms truncation) and when the call began. */
  end: number;
  start: number;
}

/** dockerd logs each line a plugin prints as `time=... level=info msg="<line, Go-quoted>" plugin=<id>`. */
export function parsePluginCalls(text: string, pluginId: string): PluginCall[] {
  const calls: PluginCall[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes(`plugin=${pluginId}`)) continue;
    const quoted = /msg="((?:[^"\\]|\\.)*)"/.exec(line)?.[1];
    if (quoted === undefined) continue;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(JSON.parse(`"${quoted}"`) as string) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (entry.msg !== 'call' && entry.msg !== 'call failed') continue;
    const end = Date.parse(String(entry.time)) + 0.5;
    const ms = Number(entry.ms);
    calls.push({
      call: String(entry.call).replace(/^VolumeDriver\./, ''),
      volume: entry.volume as string | undefined,
      ms,
      status: Number(entry.status),
      ...(typeof entry.err === 'string' && { err: entry.err }),
      end,
      start: end - ms,
    });
  }
  return calls;
}

/** The text of FILE from byte OFFSET on (dockerd's log: what was logged since OFFSET was its size). */
export async function readFrom(file: string, offset: number): Promise<string> {
  const buf = await readFile(file);
  return buf.subarray(Math.min(offset, buf.length)).toString('utf8');
}

/**
 * dockerd's own warnings and errors (not a plugin's output, which carries `plugin=<id>`) that
 * name one of `words`: a plugin call that failed or timed out in dockerd, a volume it could not mount.
 */
export function dockerdComplaints(text: string, words: string[]): string[] {
  return text
    .split('\n')
    .filter((l) => /\blevel=(warning|error|fatal)\b/.test(l) && !/\bplugin=[0-9a-f]{64}\b/.test(l) && words.some((w) => l.includes(w)));
}
