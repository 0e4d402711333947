import type { Command } from 'commander';
import { UsageError, configFrom, parseNumberIn, printJson } from '../options.js';
import type { MonitorBucketOutput, MonitorOutput } from '../../shared/output-schemas.js';

/** `imgsearch monitor`: prediction-monitoring figures per hour or day from the local event log (shared/services/monitoring.ts). */
export function registerMonitorCommand(program: Command): void {
  program
    .command('monitor')
    .description('how search behaves for users: searches by kind, zero-result and low-score rates, latency, click-through, freshness lag, per hour or day')
    .option('--since <duration>', 'window ending now: minutes, hours or days, e.g. 90m, 24h, 7d', '24h')
    .option('--by <unit>', 'one row per hour or per day (UTC)', 'hour')
    .option('--low-score <x>', 'a top score below this counts as a low-score search', parseNumberIn(-1, 1), 0.5)
    .option('--json', 'print {schemaVersion, since, until, by, lowScoreThreshold, totals, unmatchedClicks, buckets: [...]} as GET /api/monitor answers')
    .action(async (opts: { since: string; by: string; lowScore: number; json?: boolean }, command: Command) => {
      if (opts.by !== 'hour' && opts.by !== 'day') throw new UsageError(`--by: expected hour or day, got "${opts.by}"`);
      const { ParseError } = await import('../../shared/errors.js');
      const { localEventLog } = await import('../../shared/wiring/local.js');
      const { monitorOutput } = await import('../../shared/http/monitor-routes.js');
      const config = await configFrom(command);
      const { createLogger } = await import('../../shared/logger.js');
      const events = localEventLog(config, createLogger({ level: config.logLevel }));
      let out: MonitorOutput;
      try {
        out = await monitorOutput({ events: { read: (range) => events.read(range) } }, { since: opts.since, by: opts.by, lowScore: String(opts.lowScore) });
      } catch (err) {
        if (err instanceof ParseError) throw new UsageError(`--${err.message}`);
        throw err;
      }
      if (opts.json) return printJson(out);
      process.stdout.write(formatFigures(out));
    });
}

const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);
const msOf = (s: { p50: number; p95: number } | null) => (s === null ? '-' : `${s.p50.toFixed(0)}/${s.p95.toFixed(0)}`);

function row(label: string, b: MonitorBucketOutput): string {
  const cells = [
    label.padEnd(17),
    String(b.searches).padStart(8),
    `${b.byKind.image}/${b.byKind.text}/${b.byKind.similar}`.padStart(14),
    pct(b.zeroResultRate).padStart(7),
    pct(b.lowScoreRate).padStart(7),
    msOf(b.latencyMs.total).padStart(11),
    (b.topScore ? b.topScore.p50.toFixed(3) : '-').padStart(7),
    pct(b.clickThroughRate).padStart(7),
    String(b.freshness.count).padStart(6),
    (b.freshness.lagMs ? `${(b.freshness.lagMs.p95 / 1000).toFixed(1)}s` : '-').padStart(9),
  ];
  return `${cells.join('  ')}\n`;
}

/** A table: one line per hour/day that saw anything, then the totals. */
export function formatFigures(out: MonitorOutput): string {
  const titles = ['searches', 'image/text/sim', 'zero', 'low', 'p50/p95 ms', 'top p50', 'CTR', 'fresh', 'lag p95'];
  const widths = [8, 14, 7, 7, 11, 7, 7, 6, 9];
  const header = `${['start (UTC)'.padEnd(17), ...titles.map((t, i) => t.padStart(widths[i]!))].join('  ')}\n`;
  const label = (iso: string) => (out.by === 'hour' ? iso.slice(0, 16).replace('T', ' ') : iso.slice(0, 10));
  const lines = out.buckets.filter((b) => b.searches > 0 || b.freshness.count > 0).map((b) => row(label(b.start), b));
  if (out.totals.searches === 0 && out.totals.freshness.count === 0) return `no searches or indexed images since ${out.since}\n`;
  const unmatched = out.unmatchedClicks > 0 ? `${out.unmatchedClicks} clicks on searches before the window are not counted\n` : '';
  return header + lines.join('') + row('total', out.totals) + unmatched;
}
