import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  buildDeployable,
  containerCommand,
  DEPLOYABLES,
  dependencyClosure,
  FUNCTION_TARGETS,
  IMAGE_NAMES,
  installedFootprint,
  REPO_ROOT,
  type DeployableBuild,
  type DeployableName,
} from '../../infra/packaging.js';

/**
 * Policies of what each deployable ships, checked on real esbuild builds. Each bundle is run by a
 * plain `node` (no tsx) in a sandbox whose node_modules holds only the packages its package.json
 * pulls in (symlinks into the repository's node_modules, `--preserve-symlinks`), so an import the
 * deployable does not declare fails here as it would in the cloud.
 */
const NEVER_IN_A_FUNCTION = [/^onnxruntime-node$/, /^@tensorflow\//, /^@lancedb\//, /^@pulumi\//, /^tsx$/, /^sharp$/];
const NEVER_IN_AN_IMAGE = [/^@pulumi\//, /^@lancedb\//, /^tsx$/, /^typescript$/, /^vitest$/, /^esbuild$/];
/** What a module resolution or link failure prints; an entry that gets past loading prints our JSON log lines instead. */
const LOAD_FAILURE =
  /ERR_MODULE_NOT_FOUND|Cannot find (package|module)|does not provide an export named|ERR_REQUIRE_ESM|SyntaxError|ReferenceError|Dynamic require of/;

let work: string;
const builds = new Map<DeployableName, DeployableBuild>();

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'iss-packaging-'));
  for (const name of Object.keys(DEPLOYABLES) as DeployableName[]) builds.set(name, buildDeployable(name, path.join(work, 'out', name)));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A copy of the deployable with node_modules linking exactly its dependency closure (top-level entries; nested ones come with their parents). */
function sandbox(build: DeployableBuild): string {
  const dir = path.join(work, 'run', build.name);
  if (existsSync(dir)) return dir;
  cpSync(build.outDir, dir, { recursive: true });
  for (const location of dependencyClosure(Object.keys(build.dependencies)).locations.keys()) {
    if (location.split('node_modules/').length !== 2 || !existsSync(path.join(REPO_ROOT, location))) continue;
    mkdirSync(path.dirname(path.join(dir, location)), { recursive: true });
    symlinkSync(path.join(REPO_ROOT, location), path.join(dir, location), 'dir');
  }
  return dir;
}

function run(args: string[], cwd: string, timeoutMs = 20_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    // A minimal environment: no NODE_OPTIONS (no tsx), no cloud settings.
    const child = spawn(process.execPath, ['--preserve-symlinks', ...args], { cwd, env: { PATH: process.env.PATH ?? '', HOME: cwd, NODE_ENV: 'production' } });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Imports the bundle, lists the targets it registered, and invokes its own target once without any configuration. */
const functionProbe = (bundle: string, target: string) => `
const targets = ${JSON.stringify(FUNCTION_TARGETS)};
await import(${JSON.stringify(pathToFileURL(bundle).href)});
const { getFunction } = await import('@google-cloud/functions-framework/testing');
const registered = targets.filter((t) => getFunction(t));
const fn = getFunction(${JSON.stringify(target)});
let failure = null;
if (fn) {
  const res = { code: 0, body: null, status(c) { this.code = c; return this; }, json(b) { this.body = b; return this; }, send(b) { this.body = b; return this; } };
  try {
    await (fn.length >= 2 ? fn({ header: () => undefined, headers: {}, body: {} }, res) : fn({ id: 'probe', type: 'probe', source: 'probe', data: {} }));
    failure = res.body?.error ?? null;
  } catch (err) {
    failure = err?.message ?? String(err);
  }
}
console.log('PROBE ' + JSON.stringify({ registered, failure }));
`;

describe('Cloud Functions', () => {
  test.each(FUNCTION_TARGETS)('%s installs no model runtime, TensorFlow, LanceDB, Pulumi or tsx', (target) => {
    const build = builds.get(target)!;
    const footprint = installedFootprint(build.dependencies);
    const names = [...footprint.packages, ...footprint.notInstalled, ...Object.keys(build.dependencies)];
    expect(names.filter((n) => NEVER_IN_A_FUNCTION.some((re) => re.test(n)))).toEqual([]);
    expect(build.dependencies['@google-cloud/functions-framework']).toBeDefined();
  });

  test.each(FUNCTION_TARGETS)('%s ships JavaScript only, with a package.json naming it and the installed versions', (target) => {
    const build = builds.get(target)!;
    expect(build.files.filter((f) => /\.[cm]?tsx?$/.test(f))).toEqual([]);
    expect(build.main).toBe('index.js');
    const pkg = JSON.parse(readFileSync(path.join(build.outDir, 'package.json'), 'utf8'));
    expect(pkg).toMatchObject({ type: 'module', main: 'index.js' });
    expect(pkg.scripts).toBeUndefined();
    const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8'));
    for (const [name, version] of Object.entries(pkg.dependencies)) expect(version).toBe(lock.packages[`node_modules/${name}`].version);
    // The lockfile of the deployable is the repository's, cut to the closure: `npm ci` installs exactly that.
    const own = JSON.parse(readFileSync(path.join(build.outDir, 'package-lock.json'), 'utf8'));
    expect(own.packages[''].dependencies).toEqual(pkg.dependencies);
    for (const [location, entry] of Object.entries<{ version?: string }>(own.packages))
      if (location) expect(entry.version).toBe(lock.packages[location].version);
  });

  test('each bundle loads in plain node with only its declared packages, registers its own target and no other, and reads configuration only when invoked', async () => {
    const results = await Promise.all(
      FUNCTION_TARGETS.map(async (target) => {
        const build = builds.get(target)!;
        const dir = sandbox(build);
        const { code, output } = await run(['--input-type=module', '-e', functionProbe(path.join(dir, build.main), target)], dir);
        const line = output.split('\n').find((l) => l.startsWith('PROBE '));
        return { target, code, output, probe: line ? (JSON.parse(line.slice(6)) as { registered: string[]; failure: string | null }) : null };
      }),
    );
    for (const { target, code, output, probe } of results) {
      expect(probe, `${target}: ${output}`).not.toBeNull();
      expect(code, output).toBe(0);
      expect(probe!.registered, `${target} must register exactly its own target`).toEqual([target]);
      // The module imported without any environment; invoking it names the settings of *this* entry point.
      expect(probe!.failure, output).toContain(`Invalid configuration of ${target}`);
    }
  });
});

describe('container images', () => {
  test.each(IMAGE_NAMES)('%s depends on no Pulumi, LanceDB, tsx or dev tool; only the trainer has TensorFlow', (image) => {
    const build = builds.get(image)!;
    const externals = Object.keys(build.dependencies);
    expect(externals.filter((n) => NEVER_IN_AN_IMAGE.some((re) => re.test(n)))).toEqual([]);
    if (image !== 'trainer') expect(externals.filter((n) => n.startsWith('@tensorflow/'))).toEqual([]);
    expect(build.files.filter((f) => /\.[cm]?tsx?$/.test(f))).toEqual([]);
    expect(build.bundles.length).toBeGreaterThan(0);
  });

  test('every program of every image starts in plain node with only the image packages and gets as far as its own logging', async () => {
    const programs = IMAGE_NAMES.flatMap((image) => {
      const build = builds.get(image)!;
      const dir = sandbox(build);
      return build.bundles
        .filter((b) => b.endsWith('.js'))
        .map((bundle) => ({ image, bundle, dir, args: path.basename(bundle) === 'retrain.js' ? ['--no-such-option=1'] : [] }));
    });
    // Two at a time (2 cores): each loads onnxruntime, sharp or tfjs.
    const results: { image: string; bundle: string; code: number | null; output: string }[] = [];
    for (let i = 0; i < programs.length; i += 2) {
      results.push(
        ...(await Promise.all(programs.slice(i, i + 2).map(async (p) => ({ ...p, ...(await run([path.join(p.dir, p.bundle), ...p.args], p.dir)) })))),
      );
    }
    for (const { image, bundle, output } of results) {
      expect(output, `${image} ${bundle}`).not.toMatch(LOAD_FAILURE);
      // Without configuration each program stops early, but through our JSON logger (severity set).
      expect(output, `${image} ${bundle}`).toMatch(/"severity":"(ERROR|CRITICAL)"/);
    }
  });

  test('files a bundle opens relative to itself (worker scripts) sit next to it', () => {
    for (const image of IMAGE_NAMES) {
      const build = builds.get(image)!;
      for (const bundle of build.bundles) {
        const text = readFileSync(path.join(build.outDir, bundle), 'utf8');
        for (const m of text.matchAll(/new URL\(\s*"(\.\/[^"]+)"\s*,\s*import\.meta\.url\s*\)/g)) {
          expect(build.files, `${image} ${bundle} opens ${m[1]}`).toContain(path.posix.join(path.posix.dirname(bundle), m[1]!.slice(2)));
        }
      }
    }
    expect(builds.get('embed')!.files).toContain('dist/inference-worker.mjs');
  });

  test('the search bundle finds the web page it serves', async () => {
    const build = builds.get('search')!;
    const dir = sandbox(build);
    const probe = `const m = await import(${JSON.stringify(pathToFileURL(path.join(dir, build.main)).href)}); const fs = await import('node:fs'); console.log('WEB ' + fs.existsSync(m.webDir + '/index.html'));`;
    const { output } = await run(['--input-type=module', '-e', probe], dir);
    expect(output).toContain('WEB true');
  });

  test('containerCommand runs a bundle of the image with source maps', () => {
    expect(containerCommand('trainer', 'reindex')).toEqual({ commands: ['node'], args: ['--enable-source-maps', '/app/dist/reindex.js'] });
    expect(containerCommand('trainer', 'jobs/retrain/main.ts').args.at(-1)).toBe('/app/dist/retrain.js');
    expect(containerCommand('search').args.at(-1)).toBe('/app/dist/search.js');
    expect(() => containerCommand('embed', 'reindex')).toThrow(/no entry "reindex"/);
    for (const image of IMAGE_NAMES) {
      const build = builds.get(image)!;
      expect(build.bundles.map((b) => `/app/${b}`)).toContain(containerCommand(image).args.at(-1));
    }
  });
});

describe('builds', () => {
  test('a build is reused while its inputs are unchanged', () => {
    const again = buildDeployable('onObjectEvent', path.join(work, 'out', 'onObjectEvent'));
    expect(again.reused).toBe(true);
    expect(again.digest).toBe(builds.get('onObjectEvent')!.digest);
  });

  test('the closure follows nested node_modules the way Node resolves them', () => {
    const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
    const nested = Object.keys(lock.packages).find((l) => /^node_modules\/@google-cloud\/storage\/node_modules\//.test(l));
    const closure = dependencyClosure(['@google-cloud/storage']);
    if (nested) expect(closure.locations.has(nested)).toBe(true);
    expect(closure.unresolved).toEqual([]);
    const fp = installedFootprint(['@google-cloud/storage']);
    expect(fp.modules).toBe([...closure.locations.keys()].filter((l) => existsSync(path.join(REPO_ROOT, l))).length);
    expect(fp.bytes).toBeGreaterThan(0);
  });
});
