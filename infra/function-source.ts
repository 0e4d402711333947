import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as pulumi from '@pulumi/pulumi';

/**
 * The source archive of a Cloud Functions (gen2) deployment: the repository's `functions/` and
 * `shared/` trees, the lockfile and `.npmrc`, and a package.json whose `main` is the module that
 * registers the function. The build runs `npm ci`; at run time `NODE_OPTIONS=--import tsx` lets
 * the Functions Framework import the TypeScript module directly (no compile step to drift).
 */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Module that registers each functions-framework target (written by the functions' owners). */
export const FUNCTION_MODULES = {
  onObjectEvent: 'functions/on-object-event.ts',
  dispatchEmbed: 'functions/dispatch-embed.ts',
  upsertVectors: 'functions/upsert-vectors.ts',
  startRetraining: 'functions/start-retraining.ts',
} as const;
export type FunctionTarget = keyof typeof FUNCTION_MODULES;

const SOURCE_DIRS = ['functions', 'shared'];
const SOURCE_FILES = ['package-lock.json', '.npmrc', 'tsconfig.json'];

function* filesUnder(dir: string): Generator<string> {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir).sort()) {
    if (entry === 'node_modules' || entry.startsWith('.')) continue;
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) yield* filesUnder(full);
    else yield full;
  }
}

/** package.json of the archive: the repository's, with `main` pointing at the target's module. */
export function functionPackageJson(target: FunctionTarget, root = REPO_ROOT): string {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, unknown>;
  // Scripts go (the buildpack would run a `build`/`gcp-build` script); dependencies stay exactly as
  // in the lockfile, which `npm ci` checks against this file.
  const { scripts: _scripts, bin: _bin, ...rest } = pkg;
  return `${JSON.stringify({ ...rest, main: FUNCTION_MODULES[target] }, null, 2)}\n`;
}

let cachedDigest: string | undefined;

/** Content hash of everything the archive holds, so a code change gives a new object name and a redeploy. */
export function sourceDigest(root = REPO_ROOT): string {
  if (cachedDigest && root === REPO_ROOT) return cachedDigest;
  const hash = createHash('sha256');
  const files = [...SOURCE_DIRS.flatMap((d) => [...filesUnder(path.join(root, d))]), ...SOURCE_FILES.map((f) => path.join(root, f))];
  for (const file of files) {
    if (!existsSync(file)) continue;
    hash.update(path.relative(root, file)).update('\0').update(readFileSync(file)).update('\0');
  }
  hash.update(readFileSync(path.join(root, 'package.json')));
  const digest = hash.digest('hex').slice(0, 16);
  if (root === REPO_ROOT) cachedDigest = digest;
  return digest;
}

export function functionArchive(target: FunctionTarget, root = REPO_ROOT): pulumi.asset.AssetArchive {
  const assets: Record<string, pulumi.asset.Asset | pulumi.asset.Archive> = {
    'package.json': new pulumi.asset.StringAsset(functionPackageJson(target, root)),
  };
  for (const dir of SOURCE_DIRS) assets[dir] = new pulumi.asset.FileArchive(path.join(root, dir));
  for (const file of SOURCE_FILES) {
    if (existsSync(path.join(root, file))) assets[file] = new pulumi.asset.FileAsset(path.join(root, file));
  }
  return new pulumi.asset.AssetArchive(assets);
}
