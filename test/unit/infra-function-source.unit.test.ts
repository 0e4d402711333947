import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type * as pulumi from '@pulumi/pulumi';
import { afterAll, describe, expect, test } from 'vitest';
import { FUNCTION_MODULES, functionArchive, functionPackageJson, sourceDigest, type FunctionTarget } from '../../infra/function-source.js';

const roots: string[] = [];
afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** A repository with one function module and a lockfile naming the two packages it imports. */
function fakeRepo(): string {
  const root = mkdtempSync(path.join(tmpdir(), 'iss-src-'));
  roots.push(root);
  writeFileSync(
    path.join(root, 'package.json'),
    JSON.stringify({ name: 'x', version: '1.0.0', type: 'module', scripts: { build: 'tsc' }, dependencies: { tsx: '1' } }),
  );
  writeFileSync(
    path.join(root, 'package-lock.json'),
    JSON.stringify({
      name: 'x',
      lockfileVersion: 3,
      packages: {
        '': { name: 'x' },
        'node_modules/@google-cloud/functions-framework': { version: '5.0.5', dependencies: { minimist: '^1.2.8' } },
        'node_modules/@google-cloud/storage': { version: '7.22.0' },
        'node_modules/minimist': { version: '1.2.8' },
        'node_modules/tsx': { version: '4.0.0' },
      },
    }),
  );
  mkdirSync(path.join(root, 'functions'));
  writeUpsert(root, 'ok');
  writeFileSync(path.join(root, 'functions', 'unrelated.ts'), 'export const unrelated = 1;\n');
  return root;
}

function writeUpsert(root: string, reply: string): void {
  writeFileSync(
    path.join(root, 'functions', 'upsert-vectors.ts'),
    [
      "import * as functions from '@google-cloud/functions-framework';",
      "import type { Storage } from '@google-cloud/storage';",
      "import { Bucket } from '@google-cloud/storage';",
      `functions.http('upsertVectors', (_req, res) => { res.send(${JSON.stringify(reply)} + String(Bucket as unknown as Storage)); });`,
      '',
    ].join('\n'),
  );
}

async function archiveFiles(archive: pulumi.asset.AssetArchive): Promise<Record<string, string>> {
  const assets = await archive.assets;
  return Object.fromEntries(await Promise.all(Object.entries(assets).map(async ([name, asset]) => [name, await (asset as pulumi.asset.FileAsset).path])));
}

/** sha256 over the uploaded files' names and bytes, computed here independently of infra/packaging.ts. */
function digestOf(files: Record<string, string>): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(files).sort()) hash.update(name).update('\0').update(readFileSync(files[name]!)).update('\0');
  return hash.digest('hex').slice(0, 16);
}

describe('function source archive', () => {
  test('the archive is the compiled bundle and its manifest: no TypeScript, no repository tree', async () => {
    const root = fakeRepo();
    const files = await archiveFiles(functionArchive('upsertVectors', root));
    expect(Object.keys(files).sort()).toEqual(['index.js', 'index.js.map', 'package-lock.json', 'package.json']);
    const bundle = readFileSync(files['index.js']!, 'utf8');
    expect(bundle).toMatch(/\.http\("upsertVectors"/);
    expect(bundle).not.toMatch(/import type/);
  });

  test('package.json starts the bundle, runs no scripts, and depends on exactly what the bundle imports at the locked versions', () => {
    const pkg = JSON.parse(functionPackageJson('upsertVectors', fakeRepo()));
    expect(pkg.main).toBe('index.js');
    expect(pkg.type).toBe('module');
    expect(pkg.scripts).toBeUndefined();
    // tsx, a dependency of the repository, is not one of the function's.
    expect(pkg.dependencies).toEqual({ '@google-cloud/functions-framework': '5.0.5', '@google-cloud/storage': '7.22.0' });
  });

  test('the digest is the hash of what is uploaded, and changes with the code (so the function redeploys)', async () => {
    const root = fakeRepo();
    const before = sourceDigest('upsertVectors', root);
    expect(before).toBe(digestOf(await archiveFiles(functionArchive('upsertVectors', root))));
    writeFileSync(path.join(root, 'functions', 'unrelated.ts'), 'export const unrelated = 2;\n');
    expect(sourceDigest('upsertVectors', root)).toBe(before);
    writeUpsert(root, 'changed');
    const after = sourceDigest('upsertVectors', root);
    expect(after).not.toBe(before);
    expect(after).toBe(digestOf(await archiveFiles(functionArchive('upsertVectors', root))));
  });

  test('every function of the repository uploads its own bundle, whose main registers its target', async () => {
    const digests = new Set<string>();
    for (const target of Object.keys(FUNCTION_MODULES) as FunctionTarget[]) {
      const files = await archiveFiles(functionArchive(target));
      const pkg = JSON.parse(readFileSync(files['package.json']!, 'utf8'));
      expect(Object.keys(files)).toContain(pkg.main);
      expect(Object.keys(files).filter((f) => f.endsWith('.ts'))).toEqual([]);
      expect(readFileSync(files[pkg.main]!, 'utf8')).toMatch(new RegExp(`\\.(cloudEvent|http)\\("${target}"`));
      expect(sourceDigest(target)).toBe(digestOf(files));
      digests.add(sourceDigest(target));
    }
    expect(digests.size).toBe(Object.keys(FUNCTION_MODULES).length);
  });
});
