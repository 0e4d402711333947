import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time per thread of this process, from /proc (Linux only; elsewhere an empty map), grouped
 * so that a pipeline run shows where the cores go: the main thread, the inference worker with
 * ONNX Runtime's threads (the threads that appeared while the model was loaded), libvips, LanceDB
 * (tokio) and the rest (libuv pool — where sharp's calls and file-system calls run — and V8).
 */
export type ThreadGroup = 'main' | 'inference' | 'libvips' | 'lancedb' | 'libuv + V8';

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** tid → { name, CPU ms } */
export function threadTimes(): Map<string, { name: string; ms: number }> {
  const out = new Map<string, { name: string; ms: number }>();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(tid, { name, ms: (Number(fields[11]) + Number(fields[12])) * TICK_MS });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** CPU ms per group between two snapshots; `inferenceTids` are the threads the model load created. */
export function cpuByGroup(
  before: Map<string, { name: string; ms: number }>,
  after: Map<string, { name: string; ms: number }>,
  inferenceTids: ReadonlySet<string>,
): Record<ThreadGroup, number> {
  const groups: Record<ThreadGroup, number> = { main: 0, inference: 0, libvips: 0, lancedb: 0, 'libuv + V8': 0 };
  for (const [tid, { name, ms }] of after) {
    const spent = ms - (before.get(tid)?.ms ?? 0);
    if (spent <= 0) continue;
    const group: ThreadGroup =
      tid === String(process.pid)
        ? 'main'
        : inferenceTids.has(tid)
          ? 'inference'
          : name.startsWith('libvips')
            ? 'libvips'
            : name.startsWith('tokio') || name.startsWith('lance')
              ? 'lancedb'
              : 'libuv + V8';
    groups[group] += spent;
  }
  return groups;
}
