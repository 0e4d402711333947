import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;

/**
 * `npm ci` must stay offline-safe (onnxruntime-node's install script would download CUDA binaries
 * from a feed this machine cannot reach) without npm printing a warning on every `npm run`/`npx`.
 * npm 11 runs a dependency's install script only when package.json's `allowScripts` approves it
 * (`npm help install-scripts`), and warns on any key in a project `.npmrc` it does not know
 * (`npm help npmrc`), which is what the old `onnxruntime-node-install=skip` line did.
 */
describe('npm configuration', () => {
  it('npm reads the project configuration without a warning', async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
    const { stdout, stderr } = await run('npm', ['pkg', 'get', 'name'], { cwd: root, env });
    expect(stdout.trim()).toBe('"image-semantic-search"');
    expect(stderr).not.toMatch(/warn/i);
  });

  it("denies onnxruntime-node's install script; the GPU image runs its installer for CUDA 12 explicitly", async () => {
    const pkg = JSON.parse(await readFile(`${root}package.json`, 'utf8')) as { allowScripts?: Record<string, boolean> };
    expect(pkg.allowScripts?.['onnxruntime-node']).toBe(false);
    const embed = await readFile(`${root}deploy/embed.Dockerfile`, 'utf8');
    expect(embed).toMatch(/npm ci --omit=dev --ignore-scripts[^\n]*\n[^\n]*ONNXRUNTIME_NODE_INSTALL=cuda12 node \.\/script\/install/);
    for (const image of ['search', 'trainer']) {
      expect(await readFile(`${root}deploy/${image}.Dockerfile`, 'utf8')).toMatch(/ONNXRUNTIME_NODE_INSTALL=skip npm ci/);
    }
  });
});
