import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { objectUri } from '../../shared/contracts.js';
import {
  account,
  cli,
  faultEnv,
  filesIn,
  report,
  seededRng,
  settledAccounting,
  startUp,
  writeTinyPngs,
  type FaultEnv,
  type UpProcess,
} from '../faults/support/harness.js';

/**
 * Every file a user puts in the bucket folder shows up as indexed, rejected (with a reason) or
 * ignored (with a reason) — in `imgsearch status` and `/api/status` — whether it was there when
 * `up` started (reconcile) or arrived while it ran (the watcher).
 */
const MAX_BYTES = 20_000;

/** The mixed folder: images, and every kind of file that is not indexed, each with the reason expected. */
async function mixedFolder(fe: FaultEnv, dir: string, rng: () => number): Promise<Record<string, string>> {
  const root = path.join(fe.bucket, dir);
  await writeTinyPngs(root, ['a.png', 'b.png', 'sub/c.png', 'x.png/inner.png'], rng);
  const noise = Buffer.alloc(160 * 160 * 3);
  for (let i = 0; i < noise.length; i++) noise[i] = Math.floor(rng() * 256);
  await fs.writeFile(
    path.join(root, 'big.png'),
    await sharp(noise, { raw: { width: 160, height: 160, channels: 3 } })
      .png()
      .toBuffer(),
  );
  await fs.writeFile(path.join(root, 'empty.png'), '');
  await fs.writeFile(path.join(root, 'broken.jpg'), 'not a jpeg at all');
  await fs.writeFile(path.join(root, 'notes.pdf'), '%PDF-1.4 not an image');
  await fs.writeFile(path.join(root, 'a.json'), JSON.stringify({ labels: ['cat'] }));
  await fs.writeFile(path.join(root, '.hidden.png'), await fs.readFile(path.join(root, 'a.png')));
  await fs.mkdir(path.join(root, '.thumbs'), { recursive: true });
  await fs.writeFile(path.join(root, '.thumbs/t.png'), await fs.readFile(path.join(root, 'a.png')));
  await fs.writeFile(path.join(root, 'download.png.part'), 'half');
  await fs.symlink(path.join(root, 'a.png'), path.join(root, 'link.png'));
  await fs.symlink('/etc/hostname', path.join(root, 'outside.png'));
  execFileSync('mkfifo', [path.join(root, 'pipe.png')]);
  return {
    'a.png': 'indexed',
    'b.png': 'indexed',
    'sub/c.png': 'indexed',
    'x.png/inner.png': 'indexed',
    'big.png': 'rejected:too-large',
    'empty.png': 'rejected:empty-file',
    'broken.jpg': 'rejected:undecodable',
    'notes.pdf': 'ignored:not-an-image-type',
    'a.json': 'ignored:sidecar',
    '.hidden.png': 'ignored:hidden',
    '.thumbs/t.png': 'ignored:hidden',
    'download.png.part': 'ignored:partial-write',
    'link.png': 'ignored:symlink',
    'outside.png': 'ignored:symlink',
    'pipe.png': 'ignored:not-a-regular-file',
  };
}

describe('every file of the bucket folder is accounted for', () => {
  let up: UpProcess | null = null;
  afterEach(async () => {
    await up?.kill9();
    up = null;
  });

  it('indexed + rejected + ignored == files, each with its reason, for files present at start and files added while up runs', async () => {
    const fe = await faultEnv('accounting', { IMGSEARCH_MAX_BYTES: String(MAX_BYTES) });
    const rng = seededRng(10);
    const before = await mixedFolder(fe, 'before', rng);
    up = await startUp(fe);
    const after = await mixedFolder(fe, 'after', rng);
    const expected: Record<string, string> = Object.fromEntries([
      ...Object.entries(before).map(([n, v]) => [`before/${n}`, v]),
      ...Object.entries(after).map(([n, v]) => [`after/${n}`, v]),
    ]);
    const files = await filesIn(fe.bucket);
    expect(files.sort()).toEqual(Object.keys(expected).sort());

    const a = await settledAccounting(fe, up, files.length, 60_000);
    report('mixed folder (accounting)', a);
    expect(a.indexed + a.rejected + a.ignored).toBe(files.length);
    expect(a.lost).toBe(0);

    const status = JSON.parse((await cli(fe, ['status', '--json'])).stdout) as {
      rejected: { items: { uri: string; reason: string; detail: string }[] };
      ignored: { items: { uri: string; reason: string; detail: string }[] };
    };
    const actual: Record<string, string> = {};
    for (const name of files) {
      const uri = objectUri(path.resolve(fe.bucket), name);
      const r = status.rejected.items.find((i) => i.uri === uri);
      const g = status.ignored.items.find((i) => i.uri === uri);
      actual[name] = r ? `rejected:${r.reason === 'too-large' || r.reason === 'empty-file' ? r.reason : 'undecodable'}` : g ? `ignored:${g.reason}` : 'indexed';
      if (r) expect(r.detail.length).toBeGreaterThan(0);
      if (g) expect(g.detail.length).toBeGreaterThan(0);
    }
    expect(actual).toEqual(expected);

    // The same lists in /api/status, and in the text of `imgsearch status`.
    // /api/status answers from a snapshot at most 10 s stale while a new reading runs (status.ts,
    // StatusSnapshots); `up` serves before its catch-up pass has recorded what it ignores, so the
    // snapshot converges on the count within that bound.
    const wantIgnored = Object.values(expected).filter((v) => v.startsWith('ignored')).length;
    const apiIgnored = async () => ((await (await fetch(`${up!.url}/api/status`)).json()) as { ignored: { count: number } }).ignored.count;
    const deadline = Date.now() + 15_000;
    let seen = await apiIgnored();
    while (seen !== wantIgnored && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      seen = await apiIgnored();
    }
    expect(seen).toBe(wantIgnored);
    const text = await cli(fe, ['status']);
    expect(text.stdout).toMatch(/ignored\s+16/);
    expect(text.stdout).toMatch(/symlink: 4/);

    // Removing an ignored file forgets it (while up runs, and at the next start).
    await fs.rm(path.join(fe.bucket, 'after/notes.pdf'));
    await fs.rm(path.join(fe.bucket, 'after/download.png.part'));
    await up.stop();
    await fs.rm(path.join(fe.bucket, 'before/.hidden.png'));
    up = await startUp(fe);
    const again = await settledAccounting(fe, up, files.length - 3, 120_000);
    expect(again.lost).toBe(0);
    const status2 = JSON.parse((await cli(fe, ['status', '--json'])).stdout) as { ignored: { count: number } };
    expect(status2.ignored.count).toBe(13);
    const final = await account(fe);
    expect(final.wrongDocuments).toEqual([]);
  }, 400_000);
});
