// Reading the TAP that node's test runner prints, for tests whose cases ran somewhere else (the
// NFS guest) and are reported again here one by one.

export interface TapResult {
  name: string;
  ok: boolean;
  skipped: boolean;
  detail: string;
  /** What the test printed with t.diagnostic (node writes it after the result line). */
  diagnostics: string[];
}

/** The leaf results of a TAP stream from node's test runner (suites are reported as their tests). */
export function parseTap(tap: string): TapResult[] {
  const lines = tap.split('\n');
  const results: TapResult[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)(not ok|ok) \d+ - (.*?)(\s+#\s*(SKIP|TODO).*)?$/.exec(lines[i]!);
    if (!m) continue;
    // A suite's block says `type: 'suite'`; its tests were already listed above it.
    const block: string[] = [];
    for (let j = i + 1; j < lines.length && !/^\s*(not ok|ok) \d+ - /.test(lines[j]!) && !/^\s*# Subtest/.test(lines[j]!); j++) block.push(lines[j]!);
    if (block.some((l) => /type: 'suite'/.test(l))) continue;
    const diagnostics = block.map((l) => /^\s*# (.*)$/.exec(l)?.[1]).filter((d): d is string => d !== undefined);
    results.push({ name: m[3]!, ok: m[2] === 'ok', skipped: !!m[5], detail: block.join('\n'), diagnostics });
  }
  return results;
}
