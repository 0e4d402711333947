import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * `npm run bench -- --only cli-start`: CPU time (user + system, all threads) and wall time of a
 * fresh `imgsearch` process for `--help`, `--version`, a usage error and `status` (on a data
 * directory prepared once), beside `node -e 0` measured in the same run as the baseline. The CPU
 * time is read by the process itself on exit (process.cpuUsage, a preload), so a loaded machine
 * stretches the wall time but not the CPU figure. Median of `runs` processes, the commands
 * interleaved.
 */
export interface CliStartRow {
  name: string;
  cpuMs: number;
  wallMs: number;
}

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(REPO, 'bin/imgsearch.mjs');

export function measureCliStart(options: { runs: number; cli?: string }): CliStartRow[] {
  const cli = options.cli ?? CLI;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'iss-cli-start-'));
  const preload = path.join(dir, 'cpu.cjs');
  writeFileSync(
    preload,
    "process.on('exit', () => { const u = process.cpuUsage(); require('fs').writeFileSync(process.env.CLI_START_CPU_FILE, String((u.user + u.system) / 1000)); });\n",
  );
  const home = path.join(dir, 'home');
  const env = { ...process.env, IMGSEARCH_HOME: home, LOG_LEVEL: 'warn' };
  // The first `status` converts the bundled model into the registry: once, outside the figures.
  spawnSync(process.execPath, [cli, 'status'], { cwd: dir, env, stdio: 'ignore' });
  const cases: [string, string[]][] = [
    ['node -e 0 (baseline)', ['-e', '0']],
    ['imgsearch --help', [cli, '--help']],
    ['imgsearch --version', [cli, '--version']],
    ['imgsearch search --min-score abc (usage error)', [cli, 'search', '--text', 'x', '--min-score', 'abc']],
    ['imgsearch status', [cli, 'status']],
  ];
  const samples = new Map<string, { cpu: number[]; wall: number[] }>(cases.map(([n]) => [n, { cpu: [], wall: [] }]));
  try {
    for (let run = 0; run < options.runs; run++) {
      for (const [name, args] of cases) {
        const cpuFile = path.join(dir, 'cpu.txt');
        const started = performance.now();
        spawnSync(process.execPath, ['-r', preload, ...args], { cwd: dir, env: { ...env, CLI_START_CPU_FILE: cpuFile }, stdio: 'ignore' });
        const s = samples.get(name)!;
        s.wall.push(performance.now() - started);
        s.cpu.push(Number(readFileSync(cpuFile, 'utf8')));
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return cases.map(([name]) => ({ name, cpuMs: median(samples.get(name)!.cpu), wallMs: median(samples.get(name)!.wall) }));
}

export function formatCliStart(rows: CliStartRow[]): string[] {
  const base = rows[0]!;
  return rows.map(
    (r) =>
      `${r.name.padEnd(48)} CPU ${r.cpuMs.toFixed(0).padStart(5)} ms  wall ${r.wallMs.toFixed(0).padStart(5)} ms` +
      (r === base ? '' : `  (+${(r.cpuMs - base.cpuMs).toFixed(0)} ms CPU over the baseline)`),
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}
