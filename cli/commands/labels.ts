import type { Command } from 'commander';
import type { LocalRuntime } from '../../shared/wiring/local.js';
import { printOutput, withRuntime } from '../options.js';

/** Each label of the live index's images with how many carry it, most used first. */
export async function labelCounts(runtime: Pick<LocalRuntime, 'catalog'>): Promise<{ label: string; images: number }[]> {
  const counts = new Map<string, number>();
  const live = await runtime.catalog.live();
  if (live) for await (const docs of live.scan(1000)) for (const d of docs) for (const l of d.labels) counts.set(l, (counts.get(l) ?? 0) + 1);
  return [...counts].map(([label, images]) => ({ label, images })).sort((a, b) => b.images - a.images || a.label.localeCompare(b.label));
}

/** `imgsearch labels`: the labels of indexed images with their counts (labels are case-sensitive in `search --label`). */
export function registerLabelsCommand(program: Command): void {
  program
    .command('labels')
    .description('labels of the indexed images, with how many images carry each (use them with `search --label`; case-sensitive)')
    .option('--json', 'print {schemaVersion, labels: [{label, images}]} most used first')
    .action(async (opts: { json?: boolean }, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const rows = await labelCounts(runtime);
        if (opts.json) return printOutput('labels', { labels: rows });
        if (rows.length === 0) return void process.stdout.write('no labelled images indexed\n');
        const width = Math.max(...rows.map((r) => String(r.images).length));
        process.stdout.write(rows.map((r) => `${String(r.images).padStart(width)}  ${r.label}\n`).join(''));
      });
    });
}
