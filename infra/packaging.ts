import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

/**
 * What each deployable runs and ships. A Cloud Function or a container image gets its entry
 * modules compiled to JavaScript and bundled by esbuild together with our own code and the small
 * pure-JS packages it uses, plus a package.json (and a package-lock.json cut from the repository's)
 * naming exactly the packages the bundle still imports at run time, at the versions installed here.
 * Nothing else of the repository travels: no TypeScript, no tsx, no Pulumi, no LanceDB.
 *
 * `node --import tsx infra/packaging.ts [name …]` (`npm run build:deployables -- <name>`) builds
 * into `.deploy/<name>/`; a build is reused while the content of its inputs is unchanged, so the
 * Pulumi program can ask for it on every preview.
 */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export type DeployableKind = 'function' | 'image';

export interface EntrySpec {
  /** Module the bundle starts from, relative to the repository root. */
  readonly source: string;
  /** Bundle file name without `.js`. */
  readonly bundle: string;
  /** Built when the source exists, skipped otherwise (an entry point another change adds). */
  readonly optional?: boolean;
}

export interface DeployableSpec {
  readonly kind: DeployableKind;
  /** The first entry is the deployable's `main`. */
  readonly entries: readonly EntrySpec[];
  /** Folders copied as they are: repository path → path inside the deployable. */
  readonly assets?: Readonly<Record<string, string>>;
}

/**
 * The deployables. Functions: the key is the Functions Framework target and the entry is the
 * module that registers it. Images: one bundle per program the image runs.
 */
export const DEPLOYABLES = {
  onObjectEvent: { kind: 'function', entries: [{ source: 'functions/on-object-event.ts', bundle: 'index' }] },
  dispatchEmbed: { kind: 'function', entries: [{ source: 'functions/dispatch-embed.ts', bundle: 'index' }] },
  upsertVectors: { kind: 'function', entries: [{ source: 'functions/upsert-vectors.ts', bundle: 'index' }] },
  startRetraining: { kind: 'function', entries: [{ source: 'functions/start-retraining.ts', bundle: 'index' }] },
  startDriftCheck: { kind: 'function', entries: [{ source: 'functions/drift-check.ts', bundle: 'index' }] },
  embed: {
    kind: 'image',
    entries: [
      { source: 'jobs/embed/main.ts', bundle: 'embed' },
      { source: 'jobs/embed/gpu-smoke.ts', bundle: 'gpu-smoke', optional: true },
    ],
  },
  trainer: {
    kind: 'image',
    entries: [
      { source: 'jobs/retrain/main.ts', bundle: 'retrain' },
      { source: 'jobs/reindex/main.ts', bundle: 'reindex' },
      { source: 'jobs/bootstrap-model/main.ts', bundle: 'bootstrap-model', optional: true },
      { source: 'jobs/drift-check/main.ts', bundle: 'drift-check', optional: true },
    ],
  },
  // functions/search-server.ts serves `../web` relative to its own file: the bundle sits in
  // dist/, so web/ next to dist/ keeps that path valid.
  search: { kind: 'image', entries: [{ source: 'functions/search-server.ts', bundle: 'search' }], assets: { web: 'web' } },
} as const satisfies Record<string, DeployableSpec>;

export type DeployableName = keyof typeof DEPLOYABLES;
type OfKind<K extends DeployableKind> = { [N in DeployableName]: (typeof DEPLOYABLES)[N]['kind'] extends K ? N : never }[DeployableName];
export type FunctionTarget = OfKind<'function'>;
export type ImageName = OfKind<'image'>;

export const DEPLOYABLE_NAMES = Object.keys(DEPLOYABLES) as DeployableName[];
export const FUNCTION_TARGETS = DEPLOYABLE_NAMES.filter((n): n is FunctionTarget => DEPLOYABLES[n].kind === 'function');
export const IMAGE_NAMES = DEPLOYABLE_NAMES.filter((n): n is ImageName => DEPLOYABLES[n].kind === 'image');

/** Module that registers each Functions Framework target. */
export const FUNCTION_MODULES = Object.fromEntries(FUNCTION_TARGETS.map((t) => [t, DEPLOYABLES[t].entries[0].source])) as Record<FunctionTarget, string>;

/** Where bundles sit inside a deployable: a function's `index.js` at the top (what the buildpack starts), an image's programs in dist/. */
const BUNDLE_DIR: Record<DeployableKind, string> = { function: '.', image: 'dist' };
/** Working directory of the images (deploy/*.Dockerfile copy the deployable there). */
export const IMAGE_APP_DIR = '/app';
/** The Functions Framework loads the function module: it must be installed next to it, never bundled. */
const FUNCTIONS_FRAMEWORK = '@google-cloud/functions-framework';

/**
 * Packages left as imports (installed by the deployable's package.json), never bundled: native
 * addons (onnxruntime-node, sharp), packages that read files next to their own code (.proto and
 * .json descriptors of the Google clients and gRPC, tfjs' wasm binaries, nsfwjs' model files), and
 * the Functions Framework (the runtime and the function must share one instance of it).
 * Everything else our code imports (zod, pino, fastify, the OpenSearch client …) is bundled.
 */
const EXTERNAL_PACKAGES = ['@google-cloud/*', 'google-gax', '@grpc/*', 'onnxruntime-node', 'sharp', '@tensorflow/*', 'nsfwjs', '@lancedb/*'];
/** Never a dependency of a deployable: build and dev tools, the Pulumi SDK, the local index. */
const FORBIDDEN = [/^@pulumi\//, /^tsx$/, /^typescript$/, /^@lancedb\//, /^vitest$/, /^esbuild$/, /^@esbuild\//];

/** CommonJS packages inside an ESM bundle call `require` for Node built-ins. */
const BANNER = "import { createRequire as __issCreateRequire } from 'node:module';\nconst require = __issCreateRequire(import.meta.url);";

/** Packages our code loads by path (`require.resolve('nsfwjs')`, `createRequire(…)('x')`): esbuild does not see them as imports. */
const PATH_LOADED = [/\brequire\.resolve\(\s*['"]([^'"]+)['"]/g, /createRequire\([^()]*(?:\([^()]*\))?[^()]*\)\(\s*['"]([^'"]+)['"]/g];
/** Worker scripts started as `new Worker(new URL('./x.mjs', import.meta.url))`: bundled next to the bundle. */
const WORKER_URL = /new URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g;

// ---------------------------------------------------------------------------------------------
// The lockfile: versions, dependency closure, installed footprint
// ---------------------------------------------------------------------------------------------

interface LockEntry {
  name?: string;
  version?: string;
  link?: boolean;
  resolved?: string;
  dev?: boolean;
  optional?: boolean;
  devOptional?: boolean;
  peer?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  [field: string]: unknown;
}

interface Lockfile {
  name?: string;
  version?: string;
  lockfileVersion: number;
  requires?: boolean;
  packages: Record<string, LockEntry>;
}

const lockCache = new Map<string, { mtimeMs: number; lock: Lockfile }>();

function readLock(root: string): Lockfile {
  const file = path.join(root, 'package-lock.json');
  const { mtimeMs } = statSync(file);
  const cached = lockCache.get(file);
  if (cached?.mtimeMs === mtimeMs) return cached.lock;
  const lock = JSON.parse(readFileSync(file, 'utf8')) as Lockfile;
  if (!lock.packages || lock.lockfileVersion < 2)
    throw new Error(`${file}: lockfileVersion ${lock.lockfileVersion} has no "packages" map (run npm install with npm 7 or later)`);
  lockCache.set(file, { mtimeMs, lock });
  return lock;
}

/** `@scope/name/sub/path` → `@scope/name`; `name/sub` → `name`. */
function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

const isBarePackage = (specifier: string) => !/^(\.|\/|[a-zA-Z]:\\|node:|data:|file:)/.test(specifier) && !isBuiltin(specifier);

/** Name of the package at a lock location (`node_modules/a/node_modules/@s/b` → `@s/b`). */
const nameAt = (location: string) => location.slice(location.lastIndexOf('node_modules/') + 'node_modules/'.length);

/** The lock location `name` resolves to from the package at `from` ('' = the root), as Node walks up node_modules folders. */
function resolveLocation(lock: Lockfile, from: string, name: string): string | undefined {
  for (let base = from; ;) {
    const candidate = base ? `${base}/node_modules/${name}` : `node_modules/${name}`;
    const entry = lock.packages[candidate];
    if (entry) return entry.link && entry.resolved ? entry.resolved : candidate;
    if (!base) return undefined;
    const up = base.lastIndexOf('/node_modules/');
    base = up === -1 ? '' : base.slice(0, up);
  }
}

type EdgeKind = 'prod' | 'optional' | 'peer';

function edgesOf(entry: LockEntry): { name: string; kind: EdgeKind }[] {
  const edges: { name: string; kind: EdgeKind }[] = [];
  for (const name of Object.keys(entry.dependencies ?? {})) edges.push({ name, kind: 'prod' });
  for (const name of Object.keys(entry.optionalDependencies ?? {})) edges.push({ name, kind: 'optional' });
  // npm (7+) installs peer dependencies unless they are marked optional.
  for (const name of Object.keys(entry.peerDependencies ?? {})) {
    if (!entry.peerDependenciesMeta?.[name]?.optional) edges.push({ name, kind: 'peer' });
  }
  return edges;
}

export interface DependencyClosure {
  /** Lock location of every package the dependencies pull in, with npm's flags for it. */
  locations: Map<string, { optional: boolean; peer: boolean }>;
  /** Dependencies the lockfile holds no entry for (`name (from location)`). */
  unresolved: string[];
}

/**
 * Every package `dependencies` pull in, read from the lockfile's dependency graph: `dependencies`,
 * `optionalDependencies` and non-optional `peerDependencies`, each resolved the way Node resolves
 * it (nested `node_modules/a/node_modules/b` first, then up). A package is `optional` when only
 * optional edges reach it and `peer` when only peer edges do (npm's lockfile flags).
 */
export function dependencyClosure(dependencies: Iterable<string>, root = REPO_ROOT): DependencyClosure {
  const lock = readLock(root);
  const unresolved = new Set<string>();
  const walk = (follow: (kind: EdgeKind) => boolean): Set<string> => {
    const seen = new Set<string>();
    const queue: string[] = [];
    const visit = (from: string, name: string) => {
      const location = resolveLocation(lock, from, name);
      if (!location) {
        unresolved.add(from ? `${name} (from ${from})` : name);
        return;
      }
      if (!seen.has(location)) {
        seen.add(location);
        queue.push(location);
      }
    };
    for (const name of dependencies) visit('', name);
    while (queue.length > 0) {
      const location = queue.shift()!;
      for (const edge of edgesOf(lock.packages[location]!)) if (follow(edge.kind)) visit(location, edge.name);
    }
    return seen;
  };
  const all = walk(() => true);
  const required = walk((kind) => kind !== 'optional');
  const nonPeer = walk((kind) => kind !== 'peer');
  const locations = new Map([...all].sort().map((l) => [l, { optional: !required.has(l), peer: !nonPeer.has(l) }]));
  return { locations, unresolved: [...unresolved].sort() };
}

export interface Footprint {
  /** Bytes of the installed package folders (file sizes; a package's own node_modules excluded). */
  bytes: number;
  /** Packages installed (one per package folder). */
  modules: number;
  /** Names of the installed packages. */
  packages: string[];
  /** Packages of the closure that are not installed here (platform-specific optional ones), counted as 0. */
  notInstalled: string[];
}

const folderBytesCache = new Map<string, number>();

/** Bytes of the files under `dir`, without its top-level node_modules (nested packages count on their own). */
function packageFolderBytes(dir: string): number {
  const cached = folderBytesCache.get(dir);
  if (cached !== undefined) return cached;
  let total = 0;
  const walk = (d: string, top: boolean) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (top && entry.name === 'node_modules') continue;
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full, false);
      else if (entry.isFile()) total += statSync(full).size;
    }
  };
  walk(dir, true);
  folderBytesCache.set(dir, total);
  return total;
}

/**
 * Installed size and package count of what `dependencies` (names, or a package.json dependency
 * map) install: their closure from the repository's package-lock.json and the size of each of
 * those package folders under the repository's node_modules. Computed offline.
 */
export function installedFootprint(dependencies: Iterable<string> | Readonly<Record<string, string>>, root = REPO_ROOT): Footprint {
  const names = Symbol.iterator in Object(dependencies) ? [...(dependencies as Iterable<string>)] : Object.keys(dependencies);
  const closure = dependencyClosure(names, root);
  let bytes = 0;
  let modules = 0;
  const packages = new Set<string>();
  const notInstalled = new Set<string>(closure.unresolved);
  for (const location of closure.locations.keys()) {
    const dir = path.join(root, location);
    if (!existsSync(path.join(dir, 'package.json'))) {
      notInstalled.add(nameAt(location));
      continue;
    }
    bytes += packageFolderBytes(dir);
    modules++;
    packages.add(nameAt(location));
  }
  return { bytes, modules, packages: [...packages].sort(), notInstalled: [...notInstalled].sort() };
}

/** The footprint of the repository's own production dependencies: what each deployable installed before. */
export function rootFootprint(root = REPO_ROOT): Footprint {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  return installedFootprint(pkg.dependencies ?? {}, root);
}

/** The version of `name` installed at the top of the repository's node_modules. */
function installedVersion(lock: Lockfile, name: string): string {
  const version = lock.packages[`node_modules/${name}`]?.version;
  if (!version) throw new Error(`${name} is imported by a bundle but package-lock.json has no node_modules/${name} (fix: npm install ${name})`);
  return version;
}

/** package-lock.json of a deployable: the repository's entries for its closure, same layout, flags recomputed. */
function prunedLockfile(
  lock: Lockfile,
  manifest: { name: string; version: string; dependencies: Record<string, string> },
  closure: DependencyClosure,
): Lockfile {
  const packages: Record<string, LockEntry> = { '': { name: manifest.name, version: manifest.version, dependencies: manifest.dependencies } };
  for (const [location, flags] of closure.locations) {
    const { dev: _dev, devOptional: _devOptional, optional: _optional, peer: _peer, ...entry } = lock.packages[location]!;
    packages[location] = { ...entry, ...(flags.optional ? { optional: true } : {}), ...(flags.peer ? { peer: true } : {}) };
  }
  return { name: manifest.name, version: manifest.version, lockfileVersion: 3, requires: true, packages };
}

// ---------------------------------------------------------------------------------------------
// Building a deployable
// ---------------------------------------------------------------------------------------------

export interface DeployableBuild {
  name: DeployableName;
  kind: DeployableKind;
  outDir: string;
  /** Entry modules bundled (optional ones only when present). */
  entries: string[];
  /** Path of the main bundle inside the deployable (package.json `main`). */
  main: string;
  /** The programs (one bundle per entry), paths inside the deployable; worker scripts sit beside them. */
  bundles: string[];
  /** Every file the deployable ships, sorted (what a function uploads, what an image copies). */
  files: string[];
  /** Packages the bundles import at run time (the package.json dependencies, with their versions). */
  dependencies: Record<string, string>;
  /** Imports esbuild left unresolved that are not packages (expected: none). */
  excluded: string[];
  /** Bytes of all JavaScript shipped: bundles and worker scripts (no source maps, no assets). */
  bundleBytes: number;
  /** sha256 (hex) over the shipped files' paths and contents. */
  digest: string;
  /** True when the previous build was still valid and nothing was rebuilt. */
  reused: boolean;
}

interface BuildManifest {
  key: string;
  /** Repository-relative input files → sha256 of their content. */
  inputs: Record<string, string>;
  build: Omit<DeployableBuild, 'outDir' | 'reused'>;
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** Default output folder: `.deploy/<name>/` under the repository. */
export function deployDir(name: DeployableName, root = REPO_ROOT): string {
  return path.join(root, '.deploy', name);
}

function filesUnder(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...filesUnder(path.join(dir, entry.name), rel));
    else if (entry.isFile()) out.push(rel);
  }
  return out;
}

/** The digest of a deployable folder: every file's path and bytes, in sorted order. */
export function folderDigest(dir: string, files = filesUnder(dir)): string {
  const hash = createHash('sha256');
  for (const file of [...files].sort())
    hash
      .update(file)
      .update('\0')
      .update(readFileSync(path.join(dir, file)))
      .update('\0');
  return hash.digest('hex');
}

function presentEntries(name: DeployableName, root: string): EntrySpec[] {
  const spec: DeployableSpec = DEPLOYABLES[name];
  const entries = spec.entries.filter((e) => !e.optional || existsSync(path.join(root, e.source)));
  for (const e of entries) {
    if (!existsSync(path.join(root, e.source)))
      throw new Error(`deployable ${name}: entry module ${e.source} does not exist (fix the table in infra/packaging.ts)`);
  }
  return entries;
}

/** What decides whether a previous build is still valid, besides the content of its input files. */
function buildKey(name: DeployableName, entries: EntrySpec[], root: string): string {
  return sha256(
    JSON.stringify({
      name,
      spec: DEPLOYABLES[name],
      entries: entries.map((e) => e.source),
      esbuild: esbuild.version,
      // A file added to an asset folder is an input no previous build recorded.
      assets: Object.keys((DEPLOYABLES[name] as DeployableSpec).assets ?? {}).map((dir) => filesUnder(path.join(root, dir))),
      packaging: sha256(readFileSync(fileURLToPath(import.meta.url))),
      lock: sha256(readFileSync(path.join(root, 'package-lock.json'))),
      pkg: sha256(readFileSync(path.join(root, 'package.json'))),
    }),
  );
}

function readManifest(file: string): BuildManifest | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as BuildManifest;
  } catch {
    return null;
  }
}

function stillValid(manifest: BuildManifest | null, key: string, root: string, outDir: string): manifest is BuildManifest {
  if (!manifest || manifest.key !== key) return false;
  for (const [file, hash] of Object.entries(manifest.inputs)) {
    const full = path.join(root, file);
    if (!existsSync(full) || sha256(readFileSync(full)) !== hash) return false;
  }
  if (!existsSync(outDir) || manifest.build.files.some((f) => !existsSync(path.join(outDir, f)))) return false;
  return folderDigest(outDir, filesUnder(outDir)) === manifest.build.digest;
}

/** A cross-process lock (mkdir is atomic): test workers and a `pulumi preview` may build the same folder at once. */
function withLock<T>(lockDir: string, fn: () => T): T {
  const wait = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lockDir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock left by a killed process: esbuild builds take well under a minute.
      const held = statSync(lockDir, { throwIfNoEntry: false });
      if (held && Date.now() - held.mtimeMs > 60_000) rmSync(lockDir, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockDir} (remove it if no build is running)`, { cause: err });
      Atomics.wait(wait, 0, 0, 50);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}

function externalsOf(metafile: esbuild.Metafile): { packages: Set<string>; excluded: Set<string> } {
  const packages = new Set<string>();
  const excluded = new Set<string>();
  for (const output of Object.values(metafile.outputs)) {
    for (const imp of output.imports) {
      if (!imp.external) continue;
      if (isBarePackage(imp.path)) packages.add(packageName(imp.path));
      else if (!imp.path.startsWith('node:') && !isBuiltin(imp.path)) excluded.add(imp.path);
    }
  }
  return { packages, excluded };
}

const ownInputs = (metafile: esbuild.Metafile, root: string) =>
  Object.keys(metafile.inputs).filter((f) => !f.split('/').includes('node_modules') && existsSync(path.join(root, f)));

const BASE_OPTIONS: esbuild.BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Linked maps without the sources: `node --enable-source-maps` prints our .ts file:line in stack traces.
  sourcemap: 'linked',
  sourcesContent: false,
  // Local mode (shared/wiring/local.ts: LanceDB, file queues) is never bundled: it would bring
  // @lancedb/*, which FORBIDDEN refuses, so a deployable that imports it fails to build.
  external: EXTERNAL_PACKAGES,
  banner: { js: BANNER },
  metafile: true,
  logLevel: 'silent',
  // The licence comments of bundled packages travel with them, at the end of each bundle.
  legalComments: 'eof',
};

function bundle(options: esbuild.BuildOptions): esbuild.Metafile {
  const result = esbuild.buildSync({ ...BASE_OPTIONS, ...options });
  if (!result.metafile) throw new Error('esbuild returned no metafile');
  return result.metafile;
}

function buildInto(name: DeployableName, staging: string, root: string, entries: EntrySpec[]): BuildManifest['build'] & { inputs: string[] } {
  const spec: DeployableSpec = DEPLOYABLES[name];
  const bundleDir = path.join(staging, BUNDLE_DIR[spec.kind]);
  // No code splitting: `import.meta.url` in a shared chunk would name the chunk, not the program,
  // and our code locates web/, worker scripts and "am I the main module" through it. The price: a
  // package imported by a lazily imported module of ours is loaded when the program starts.
  const metafile = bundle({ absWorkingDir: root, entryPoints: entries.map((e) => ({ in: e.source, out: e.bundle })), outdir: bundleDir });
  const inputs = new Set(ownInputs(metafile, root));
  const { packages, excluded } = externalsOf(metafile);

  // Sources that load packages by path, and worker scripts referenced by URL.
  const workers = new Map<string, string>();
  for (const file of [...inputs]) {
    const text = readFileSync(path.join(root, file), 'utf8');
    for (const pattern of PATH_LOADED) for (const m of text.matchAll(pattern)) if (isBarePackage(m[1]!)) packages.add(packageName(m[1]!));
    for (const m of text.matchAll(WORKER_URL)) {
      const target = m[1]!;
      if (!/^\.\/[^/]+$/.test(target))
        throw new Error(`${file}: new URL(${JSON.stringify(target)}, import.meta.url) must name a file in the same folder to be bundled next to it`);
      workers.set(path.posix.join(path.posix.dirname(file), target.slice(2)), path.basename(target));
    }
  }
  for (const [source, fileName] of workers) {
    const ext = path.extname(fileName);
    const worker = bundle({
      absWorkingDir: root,
      entryPoints: [{ in: source, out: fileName.slice(0, -ext.length) }],
      outExtension: { '.js': ext },
      outdir: bundleDir,
    });
    for (const f of ownInputs(worker, root)) inputs.add(f);
    const more = externalsOf(worker);
    more.packages.forEach((p) => packages.add(p));
    more.excluded.forEach((p) => excluded.add(p));
  }
  if (spec.kind === 'function') packages.add(FUNCTIONS_FRAMEWORK);

  const forbidden = [...packages].filter((p) => FORBIDDEN.some((re) => re.test(p)));
  if (forbidden.length > 0)
    throw new Error(`deployable ${name} would depend on ${forbidden.join(', ')}; these never ship (see FORBIDDEN in infra/packaging.ts)`);

  for (const [from, to] of Object.entries(spec.assets ?? {})) {
    cpSync(path.join(root, from), path.join(staging, to), { recursive: true });
    for (const f of filesUnder(path.join(root, from))) inputs.add(path.posix.join(from, f));
  }

  const lock = readLock(root);
  const rootPkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { name?: string; version?: string };
  const dependencies = Object.fromEntries([...packages].sort().map((p) => [p, installedVersion(lock, p)]));
  const main = path.posix.join(BUNDLE_DIR[spec.kind], `${entries[0]!.bundle}.js`);
  const manifest = {
    name: `${rootPkg.name ?? 'app'}-${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
    version: rootPkg.version ?? '0.0.0',
    private: true,
    description: `${spec.kind === 'function' ? 'Cloud Function' : 'Container image'} ${name}, built by infra/packaging.ts from ${entries.map((e) => e.source).join(', ')}`,
    type: 'module',
    main,
    // No `engines`: the Node version is the function's runtime / the image's base, not the package's.
    dependencies,
  };
  writeFileSync(path.join(staging, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const closure = dependencyClosure(Object.keys(dependencies), root);
  writeFileSync(path.join(staging, 'package-lock.json'), `${JSON.stringify(prunedLockfile(lock, manifest, closure), null, 2)}\n`);

  const files = filesUnder(staging);
  const bundleDirRel = path.posix.normalize(BUNDLE_DIR[spec.kind]);
  const bundles = entries.map((e) => path.posix.join(bundleDirRel, `${e.bundle}.js`));
  const javascript = files.filter((f) => /\.m?js$/.test(f) && (bundleDirRel === '.' ? !f.includes('/') : f.startsWith(`${bundleDirRel}/`)));
  return {
    name,
    kind: spec.kind,
    entries: entries.map((e) => e.source),
    main,
    bundles,
    files,
    dependencies,
    excluded: [...excluded].sort(),
    bundleBytes: javascript.reduce((sum, f) => sum + statSync(path.join(staging, f)).size, 0),
    digest: folderDigest(staging, files),
    inputs: [...inputs].sort(),
  };
}

/**
 * Builds (or reuses) one deployable into `outDir`: the bundles, their source maps, assets,
 * package.json and package-lock.json, nothing else. A build is reused while its inputs (our source
 * files it bundled, the lockfile, this file, the esbuild version) have the same content and the
 * folder still holds what was built; otherwise the folder is replaced as a whole.
 */
export function buildDeployable(name: DeployableName, outDir = deployDir(name), options: { root?: string; force?: boolean } = {}): DeployableBuild {
  if (!(name in DEPLOYABLES)) throw new Error(`unknown deployable ${JSON.stringify(name)}; known: ${DEPLOYABLE_NAMES.join(', ')}`);
  const root = path.resolve(options.root ?? REPO_ROOT);
  outDir = path.resolve(outDir);
  const manifestFile = `${outDir}.build.json`;
  mkdirSync(path.dirname(outDir), { recursive: true });
  return withLock(`${outDir}.lock`, () => {
    const entries = presentEntries(name, root);
    const key = buildKey(name, entries, root);
    const previous = readManifest(manifestFile);
    if (!options.force && stillValid(previous, key, root, outDir)) return { ...previous.build, outDir, reused: true };
    if (existsSync(outDir) && readdirSync(outDir).length > 0 && !previous) {
      throw new Error(`${outDir} holds files that no build of ${name} wrote; refusing to replace it (move it away or pick another folder)`);
    }
    const staging = `${outDir}.tmp-${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    try {
      const { inputs, ...build } = buildInto(name, staging, root, entries);
      rmSync(outDir, { recursive: true, force: true });
      renameSync(staging, outDir);
      const manifest: BuildManifest = {
        key,
        inputs: Object.fromEntries(inputs.map((f) => [f, sha256(readFileSync(path.join(root, f)))])),
        build,
      };
      writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
      return { ...build, outDir, reused: false };
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  });
}

/** Resolves an image entry (bundle name such as `reindex`, or its source path) to its bundle. */
function imageEntry(image: ImageName, entry: string | undefined, root: string): EntrySpec {
  const spec: DeployableSpec = DEPLOYABLES[image];
  const found = entry === undefined ? spec.entries[0] : spec.entries.find((e) => e.bundle === entry || e.source === entry);
  if (!found) throw new Error(`image ${image} has no entry ${JSON.stringify(entry)}; entries: ${spec.entries.map((e) => e.bundle).join(', ')}`);
  if (found.optional && !existsSync(path.join(root, found.source)))
    throw new Error(`image ${image}: ${found.source} does not exist, so the image has no ${found.bundle} bundle`);
  return found;
}

/**
 * The command of a Cloud Run job/service container running one program of an image, e.g.
 * `containerCommand('trainer', 'reindex')` → `{ commands: ['node'], args: ['--enable-source-maps', '/app/dist/reindex.js'] }`.
 * The entry is the bundle name or its source path; omitted, the image's first entry.
 */
export function containerCommand(image: ImageName, entry?: string, root = REPO_ROOT): { commands: string[]; args: string[] } {
  const found = imageEntry(image, entry, root);
  return { commands: ['node'], args: ['--enable-source-maps', path.posix.join(IMAGE_APP_DIR, BUNDLE_DIR.image, `${found.bundle}.js`)] };
}

export interface DeployableReportRow {
  name: DeployableName;
  kind: DeployableKind;
  /** Entry modules, comma-separated. */
  entry: string;
  /** Bytes of the bundled JavaScript (no source maps, no assets). */
  bundleBytes: number;
  /** Packages installed next to the bundle. */
  externals: string[];
  installedBytes: number;
  modules: number;
  /** Closure packages not installed on this machine (platform-specific), counted as 0. */
  notInstalled: string[];
  digest: string;
}

/** One row per deployable (building those whose inputs changed), for `npm run check:deploy`. */
export function deployablesReport(root = REPO_ROOT): DeployableReportRow[] {
  return DEPLOYABLE_NAMES.map((name) => {
    const build = buildDeployable(name, deployDir(name, root), { root });
    const footprint = installedFootprint(build.dependencies, root);
    return {
      name,
      kind: build.kind,
      entry: build.entries.join(', '),
      bundleBytes: build.bundleBytes,
      externals: Object.keys(build.dependencies),
      installedBytes: footprint.bytes,
      modules: footprint.modules,
      notInstalled: footprint.notInstalled,
      digest: build.digest,
    };
  });
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (isMain) {
  const names = process.argv.slice(2);
  for (const name of names.length > 0 ? names : DEPLOYABLE_NAMES) {
    if (!(name in DEPLOYABLES)) {
      process.stderr.write(`unknown deployable ${JSON.stringify(name)}; known: ${DEPLOYABLE_NAMES.join(', ')}\n`);
      process.exit(2);
    }
    const started = Date.now();
    const build = buildDeployable(name as DeployableName);
    const deps = Object.entries(build.dependencies)
      .map(([p, v]) => `${p}@${v}`)
      .join(' ');
    process.stdout.write(
      `${name}: ${path.relative(process.cwd(), build.outDir) || '.'} ${build.reused ? 'up to date' : 'built'} in ${Date.now() - started} ms; ` +
        `${(build.bundleBytes / 1024).toFixed(0)} KiB of JavaScript (${build.bundles.join(', ')}); dependencies: ${deps}\n`,
    );
  }
}
