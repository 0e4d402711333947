import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  buildDeployable,
  DEPLOYABLE_NAMES,
  FUNCTION_MODULES,
  FUNCTION_TARGETS,
  installedFootprint,
  REPO_ROOT,
  rootFootprint,
  type DeployableKind,
  type DeployableName,
  type FunctionTarget,
} from '../infra/packaging.js';

/**
 * Cold start of each Cloud Function module, as a fresh `node` process importing it (the first thing
 * the Functions Framework does on a new instance), and the installed size of each deployable.
 *  - before: the TypeScript module through tsx (`node --import tsx`, what NODE_OPTIONS did), with
 *    tsx's transform cache warm (a developer machine) and disabled (a new instance: empty /tmp);
 *  - after: the esbuild bundle (`.deploy/<target>/index.js`), plain node, with and without
 *    `--enable-source-maps` (which parses the bundle's source map at load).
 * Both import the same packages from the repository's node_modules. Median of `runs` processes per
 * variant, the variants interleaved so machine load drifts over all of them alike.
 */

export interface ColdStartRow {
  target: FunctionTarget;
  tsxWarmMs: number;
  tsxColdMs: number;
  bundleMs: number;
  bundleSourceMapsMs: number;
}

export interface FootprintRow {
  name: DeployableName;
  kind: DeployableKind;
  beforeBytes: number;
  beforeModules: number;
  afterBytes: number;
  afterModules: number;
  bundleBytes: number;
}

export interface ColdStartResult {
  runs: number;
  functions: ColdStartRow[];
  footprints: FootprintRow[];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** Wall time of one `node <args>` process, from spawn to exit. */
function timeNode(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(performance.now() - started) : reject(new Error(`node ${args.join(' ')} exited ${code}: ${stderr.slice(0, 2000)}`)),
    );
  });
}

export async function measureColdStart(options: { runs?: number; targets?: FunctionTarget[] } = {}): Promise<ColdStartResult> {
  const runs = options.runs ?? 5;
  // No NODE_OPTIONS from the calling process (the bench itself runs under tsx).
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', NODE_ENV: 'production' };
  const importOf = (file: string) => ['--input-type=module', '-e', `await import(${JSON.stringify(pathToFileURL(file).href)})`];
  const functions: ColdStartRow[] = [];
  for (const target of options.targets ?? FUNCTION_TARGETS) {
    const build = buildDeployable(target);
    const source = path.join(REPO_ROOT, FUNCTION_MODULES[target]);
    const bundle = path.join(build.outDir, build.main);
    const variants = {
      tsxWarm: () => timeNode(['--import', 'tsx', ...importOf(source)], env),
      tsxCold: () => timeNode(['--import', 'tsx', ...importOf(source)], { ...env, TSX_DISABLE_CACHE: '1' }),
      bundle: () => timeNode(importOf(bundle), env),
      bundleSourceMaps: () => timeNode(['--enable-source-maps', ...importOf(bundle)], env),
    };
    // One untimed round: the OS file cache holds every file afterwards, for all variants alike.
    for (const run of Object.values(variants)) await run();
    const times: Record<keyof typeof variants, number[]> = { tsxWarm: [], tsxCold: [], bundle: [], bundleSourceMaps: [] };
    for (let i = 0; i < runs; i++) {
      for (const [name, run] of Object.entries(variants) as [keyof typeof variants, () => Promise<number>][]) times[name].push(await run());
    }
    functions.push({
      target,
      tsxWarmMs: median(times.tsxWarm),
      tsxColdMs: median(times.tsxCold),
      bundleMs: median(times.bundle),
      bundleSourceMapsMs: median(times.bundleSourceMaps),
    });
  }
  // Before, every deployable installed the repository's production dependencies.
  const before = rootFootprint();
  const footprints = DEPLOYABLE_NAMES.map((name): FootprintRow => {
    const build = buildDeployable(name);
    const after = installedFootprint(build.dependencies);
    return {
      name,
      kind: build.kind,
      beforeBytes: before.bytes,
      beforeModules: before.modules,
      afterBytes: after.bytes,
      afterModules: after.modules,
      bundleBytes: build.bundleBytes,
    };
  });
  return { runs, functions, footprints };
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/** The figures as Markdown tables. */
export function formatColdStart(r: ColdStartResult): string[] {
  const lines = [
    `  Cold import of each function module in a fresh node process (median of ${r.runs}):`,
    '',
    '  | function | tsx, warm cache | tsx, no cache | bundle | bundle + --enable-source-maps | tsx warm / bundle | tsx cold / bundle |',
    '  |---|---:|---:|---:|---:|---:|---:|',
    ...r.functions.map(
      (f) =>
        `  | ${f.target} | ${f.tsxWarmMs.toFixed(0)} ms | ${f.tsxColdMs.toFixed(0)} ms | ${f.bundleMs.toFixed(0)} ms | ${f.bundleSourceMapsMs.toFixed(0)} ms | ` +
        `${(f.tsxWarmMs / f.bundleMs).toFixed(2)}× | ${(f.tsxColdMs / f.bundleMs).toFixed(2)}× |`,
    ),
    '',
    '  Installed dependencies (package-lock closure, package folders under node_modules) and bundled JavaScript:',
    '',
    '  | deployable | kind | before | before, packages | after | after, packages | size ratio | bundle JS |',
    '  |---|---|---:|---:|---:|---:|---:|---:|',
    ...r.footprints.map(
      (f) =>
        `  | ${f.name} | ${f.kind} | ${mb(f.beforeBytes)} | ${f.beforeModules} | ${mb(f.afterBytes)} | ${f.afterModules} | ` +
        `${(f.beforeBytes / f.afterBytes).toFixed(1)}× smaller | ${(f.bundleBytes / 1024).toFixed(0)} KiB |`,
    ),
  ];
  return lines;
}
