import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { FUNCTION_MODULES, functionPackageJson, sourceDigest } from '../../infra/function-source.js';

function fakeRepo(): string {
  const root = mkdtempSync(path.join(tmpdir(), 'iss-src-'));
  writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'x', type: 'module', scripts: { build: 'tsc' }, dependencies: { tsx: '1' } }));
  mkdirSync(path.join(root, 'functions'));
  writeFileSync(path.join(root, 'functions', 'upsert-vectors.ts'), 'export {}\n');
  return root;
}

describe('function source archive', () => {
  test('package.json starts the target module and drops scripts the buildpack would run', () => {
    const pkg = JSON.parse(functionPackageJson('upsertVectors', fakeRepo()));
    expect(pkg.main).toBe(FUNCTION_MODULES.upsertVectors);
    expect(pkg.type).toBe('module');
    expect(pkg.scripts).toBeUndefined();
    expect(pkg.dependencies).toEqual({ tsx: '1' });
  });

  test('the digest changes when a source file changes (so the function redeploys)', () => {
    const root = fakeRepo();
    const before = sourceDigest(root);
    expect(sourceDigest(root)).toBe(before);
    writeFileSync(path.join(root, 'functions', 'upsert-vectors.ts'), 'export const x = 1;\n');
    expect(sourceDigest(root)).not.toBe(before);
  });
});
