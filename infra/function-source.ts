import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import { buildDeployable, deployDir, FUNCTION_MODULES, FUNCTION_TARGETS, REPO_ROOT, type DeployableBuild, type FunctionTarget } from './packaging.js';

/**
 * The source archive of a Cloud Functions (gen2) deployment: the function's bundle as
 * infra/packaging.ts builds it into `.deploy/<target>/` — `index.js` (the JavaScript module that
 * registers the target with the Functions Framework, our code and small packages bundled in), its
 * source map, and a package.json + package-lock.json naming only the packages the bundle imports.
 * The buildpack runs `npm ci` on those; nothing runs TypeScript at run time.
 */
export { FUNCTION_MODULES, REPO_ROOT, type FunctionTarget };

const builds = new Map<FunctionTarget, DeployableBuild>();

/** The function's bundle, built (or found up to date) once per process for the repository. */
export function functionBuild(target: FunctionTarget, root = REPO_ROOT): DeployableBuild {
  if (root !== REPO_ROOT) return buildDeployable(target, deployDir(target, root), { root });
  let build = builds.get(target);
  if (!build) builds.set(target, (build = buildDeployable(target)));
  return build;
}

/** package.json of the archive: `main` is the bundle that registers the target; no scripts for the buildpack to run. */
export function functionPackageJson(target: FunctionTarget, root = REPO_ROOT): string {
  const build = functionBuild(target, root);
  return readFileSync(path.join(build.outDir, 'package.json'), 'utf8');
}

/**
 * Content hash (16 hex digits) of the archive a function uploads, so a code change gives a new
 * object name and a redeploy, and an unrelated change leaves the function alone. Without a target:
 * one hash over all functions' archives.
 */
export function sourceDigest(target?: FunctionTarget, root = REPO_ROOT): string {
  if (target) return functionBuild(target, root).digest.slice(0, 16);
  const hash = createHash('sha256');
  for (const t of FUNCTION_TARGETS) hash.update(t).update('\0').update(functionBuild(t, root).digest).update('\0');
  return hash.digest('hex').slice(0, 16);
}

/** The archive: exactly the files of the function's bundle folder (the ones the digest covers). */
export function functionArchive(target: FunctionTarget, root = REPO_ROOT): pulumi.asset.AssetArchive {
  const build = functionBuild(target, root);
  const assets: Record<string, pulumi.asset.Asset> = {};
  for (const file of build.files) assets[file] = new pulumi.asset.FileAsset(path.join(build.outDir, file));
  return new pulumi.asset.AssetArchive(assets);
}
