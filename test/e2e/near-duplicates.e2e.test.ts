import { promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { alterFashionItem, alterPhotograph } from '../helpers/alterations.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { searchOutputSchema } from '../../shared/output-schemas.js';

/**
 * Acceptance: altered copies of indexed images find their original first, through the CLI, on real
 * images — photographs of several megapixels (Debian's mate-backgrounds) mixed into Fashion-MNIST.
 */
const PHOTO_DIR = '/usr/share/backgrounds/mate/nature';
const FASHION_COUNT = 200;

describe('near-duplicate search through the CLI', () => {
  let work: string;
  let env: Record<string, string>;
  let photos: string[];

  beforeAll(async () => {
    work = await tempDir('neardup');
    env = { IMGSEARCH_HOME: path.join(work, 'home') };
    const corpus = path.join(work, 'corpus');
    const made = await runCli(['dataset', 'fashion-mnist', '--out', path.join(corpus, 'fashion'), '--limit', String(FASHION_COUNT), '--split', 'test'], {
      cwd: work,
      env,
    });
    expect(made.code, made.stderr).toBe(0);
    photos = (await fs.readdir(PHOTO_DIR)).filter((f) => f.endsWith('.jpg')).sort();
    await fs.mkdir(path.join(corpus, 'photos'), { recursive: true });
    for (const p of photos) await fs.copyFile(path.join(PHOTO_DIR, p), path.join(corpus, 'photos', p));
    const ingest = await runCli(['ingest', corpus, '--json'], { cwd: work, env });
    expect(ingest.code, ingest.stderr).toBe(0);
    const summary = JSON.parse(ingest.stdout);
    expect(summary.indexed).toBe(FASHION_COUNT + photos.length);
    expect(summary.rejected).toBe(0);
  });

  async function searchAll(queries: { file: string; original: string }[]) {
    const res = await runCli(['search', '--json', '-k', '5', '--image', ...queries.map((q) => q.file)], { cwd: work, env });
    expect(res.code, res.stderr).toBe(0);
    const lines = res.stdout
      .trim()
      .split('\n')
      .map((l) => searchOutputSchema.parse(JSON.parse(l)));
    expect(lines).toHaveLength(queries.length);
    expect(lines.map((l) => l.query)).toEqual(queries.map((q) => ({ kind: 'image', value: q.file })));
    return queries.map((q, i) => ({ ...q, top: lines[i]!.results[0]?.uri ?? '' }));
  }

  it('finds every altered photograph (crop 90%, resize x0.5–x2, JPEG q70–90) first', async () => {
    expect(photos.length).toBeGreaterThanOrEqual(10);
    const qdir = path.join(work, 'queries-photos');
    await fs.mkdir(qdir);
    const queries = [];
    for (const [i, p] of photos.entries()) {
      const file = path.join(qdir, `q-${p}`);
      await fs.writeFile(file, await alterPhotograph(await fs.readFile(path.join(PHOTO_DIR, p)), i));
      queries.push({ file, original: `file://${path.join(work, 'corpus', 'photos', p)}` });
    }
    const found = await searchAll(queries);
    const misses = found.filter((f) => f.top !== f.original);
    expect(misses, JSON.stringify(misses, null, 1)).toEqual([]);
  });

  it('finds ≥ 95% of altered Fashion-MNIST items (upscale x1.5–x2, JPEG q90) first', async () => {
    const qdir = path.join(work, 'queries-fashion');
    await fs.mkdir(qdir);
    const fashionDir = path.join(work, 'corpus', 'fashion');
    const pngs = (await fs.readdir(fashionDir)).filter((f) => f.endsWith('.png')).sort();
    expect(pngs).toHaveLength(FASHION_COUNT);
    const queries = [];
    for (const [i, p] of pngs.entries()) {
      const file = path.join(qdir, p.replace('.png', '.jpg'));
      await fs.writeFile(file, await alterFashionItem(await fs.readFile(path.join(fashionDir, p)), i));
      queries.push({ file, original: `file://${path.join(fashionDir, p)}` });
    }
    const found = await searchAll(queries);
    const hits = found.filter((f) => f.top === f.original).length;
    console.log(`near-duplicate Fashion-MNIST: ${hits}/${FASHION_COUNT} found first`);
    expect(hits / FASHION_COUNT).toBeGreaterThanOrEqual(0.95);
  });
});
