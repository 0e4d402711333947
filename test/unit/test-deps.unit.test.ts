import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/cli.js';

/**
 * `npm test` on a fresh machine: its pretest step (scripts/test-deps.sh) must install — or name —
 * every Debian package whose files the tests read, and must never let the tests start without them.
 */
const script = path.join(repoRoot, 'scripts/test-deps.sh');

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const abs = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(abs)));
    else if (/\.(ts|mjs|js)$/.test(entry.name)) out.push(abs);
  }
  return out;
}

/** `package path` lines of the script's table. */
async function declared(): Promise<{ pkg: string; file: string }[]> {
  const text = await fs.readFile(script, 'utf8');
  return [...text.matchAll(/^\s*"([a-z0-9.+-]+) (\/[^"]+)"$/gm)].map((m) => ({ pkg: m[1]!, file: m[2]! }));
}

function run(args: string[], env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', [script, ...args], { env: { ...process.env, ...env } }, (err, _out, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr }),
    );
  });
}

describe('scripts/test-deps.sh (npm test’s pretest)', () => {
  it('covers every system path the tests and the code they run read (datasets, photographs, the browser)', async () => {
    const table = await declared();
    expect(new Set(table.map((d) => d.pkg))).toEqual(new Set(['dataset-fashion-mnist', 'mate-backgrounds', 'chromium']));
    const files = [...(await sourceFiles(path.join(repoRoot, 'test'))), ...(await sourceFiles(path.join(repoRoot, 'shared/datasets')))];
    const referenced = new Set<string>();
    for (const file of files) {
      const text = await fs.readFile(file, 'utf8');
      for (const m of text.matchAll(/'(\/usr\/(?:share\/(?:datasets|backgrounds)|bin)\/[^']+)'/g)) referenced.add(m[1]!);
    }
    expect(referenced.size).toBeGreaterThan(0);
    for (const ref of referenced) {
      const covered = table.some((d) => d.file === ref || d.file.startsWith(`${ref}/`) || ref.startsWith(`${d.file}/`));
      expect(covered, `${ref} is read by the tests but scripts/test-deps.sh does not install it`).toBe(true);
    }
  });

  it('on a machine without the packages, fails (non-zero) naming each package and the exact apt-get command', async () => {
    const out = await run(['--check'], { TEST_DEPS_PREFIX: '/nonexistent-fresh-machine' });
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(/dataset-fashion-mnist/);
    expect(out.stderr).toMatch(/mate-backgrounds/);
    expect(out.stderr).toMatch(/chromium/);
    expect(out.stderr).toMatch(/apt-get install -y --no-install-recommends dataset-fashion-mnist mate-backgrounds chromium/);
  });

  it('is run before the tests by `npm test`, so the README’s command sets the machine up', async () => {
    const pkg = JSON.parse(await fs.readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.pretest).toBe('bash scripts/test-deps.sh');
  });
});
