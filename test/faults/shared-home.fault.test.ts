import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { account, cli, faultEnv, filesIn, report, seededRng, settledAccounting, startUp, writeTinyPngs, type UpProcess } from './support/harness.js';

/**
 * Two processes on one data directory, corrupted or truncated state files, and a clock going
 * backwards for generations — each case still ends with every file accounted for.
 */
describe('fault: shared data directory, damaged state, clock', () => {
  let ups: UpProcess[] = [];
  afterEach(async () => {
    for (const up of ups) await up.kill9();
    ups = [];
  });

  it('a second writer on the same data directory waits or refuses naming the holder, and no row is written twice', async () => {
    const fe = await faultEnv('two-writers');
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 30 }, (_, i) => `t${i}.png`),
      seededRng(31),
    );
    const first = await startUp(fe);
    ups.push(first);
    // A second `up` and an `ingest` of the same folder, at once.
    const second = startUp(fe, 20_000).then(
      (u) => {
        ups.push(u);
        return { started: true, stderr: '' };
      },
      (err: Error) => ({ started: false, stderr: err.message }),
    );
    const ingest = cli(fe, ['ingest', fe.bucket], 60_000);
    const [s, i] = await Promise.all([second, ingest]);
    // Each either refused naming the holder (pid and command) or waited its turn; none ran beside the first.
    if (!s.started) expect(s.stderr).toMatch(new RegExp(`imgsearch up.*pid ${first.child.pid}|pid ${first.child.pid}.*up`));
    if (i.code !== 0) expect(i.stderr).toMatch(new RegExp(`pid ${first.child.pid}`));
    const a = await settledAccounting(fe, first, 30);
    report('two writers on one data directory', a);
    expect(a.lost).toBe(0);
    expect(a.wrongDocuments).toEqual([]);
  });

  it('truncated state files give an error naming the file; a damaged queue message is set aside, not fatal', async () => {
    const fe = await faultEnv('state-files');
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 12 }, (_, i) => `s${i}.png`),
      seededRng(32),
    );
    const up = await startUp(fe);
    ups.push(up);
    await settledAccounting(fe, up, 12);
    await up.stop();
    ups = [];
    const stateFiles = (await walk(fe.home)).filter((f) => /(alias|active)[^/]*\.json$/.test(f));
    expect(stateFiles.length).toBeGreaterThan(0);
    for (const file of stateFiles) {
      const original = await fs.readFile(file);
      await fs.writeFile(file, original.subarray(0, Math.floor(original.length / 2)));
      const out = await cli(fe, ['status']);
      expect(out.code, file).not.toBe(0);
      expect(out.stderr, file).toContain(path.basename(file));
      expect(out.stderr).not.toMatch(/^imgsearch: Unexpected end of JSON input$/m);
      await fs.writeFile(file, original);
    }
    // A cut message file in the queue is quarantined as a dead letter with its reason; the rest goes on.
    const ready = path.join(fe.home, 'queue', 'image-events', 'ready');
    await fs.mkdir(ready, { recursive: true });
    await fs.writeFile(path.join(ready, '001700000000000-00000001-00000001-deadbeef.json'), '{"messageId": "x", "da');
    await writeTinyPngs(fe.bucket, ['after-damage.png'], seededRng(33));
    const again = await startUp(fe);
    ups.push(again);
    const a = await settledAccounting(fe, again, 13);
    report('truncated state files and a cut queue message', a);
    expect(a.lost).toBe(0);
    const status = JSON.parse((await cli(fe, ['status', '--json'])).stdout) as { deadLettered: { items: { reason: string }[] } };
    expect(status.deadLettered.items.map((d) => d.reason).join('\n')).toMatch(/corrupt message file/);
  });

  it('a file replaced with an older modification time (clock went backwards) is indexed at its newest content', async () => {
    const fe = await faultEnv('clock');
    const rng = seededRng(34);
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 10 }, (_, i) => `c${i}.png`),
      rng,
    );
    const up = await startUp(fe);
    ups.push(up);
    await settledAccounting(fe, up, 10);
    // New content, with a modification time an hour before the one indexed: the clock went back.
    const names = (await filesIn(fe.bucket)).slice(0, 5);
    for (const name of names) {
      const file = path.join(fe.bucket, name);
      const before = await fs.stat(file);
      await writeTinyPngs(fe.bucket, [name], rng);
      const past = new Date(before.mtimeMs - 3_600_000);
      await fs.utimes(file, past, past);
    }
    const a = await settledAccounting(fe, up, 10, 60_000).catch(async (err: Error) => {
      report('clock going backwards (failed)', await account(fe));
      throw err;
    });
    report('clock going backwards for generations', a);
    expect(a.lost).toBe(0);
    expect(a.wrongDocuments).toEqual([]);
  });
});

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const abs = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name.endsWith('.lance') || entry.name === 'queue' || entry.name === 'cache') continue;
      out.push(...(await walk(abs)));
    } else out.push(abs);
  }
  return out;
}
