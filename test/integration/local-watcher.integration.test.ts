import { appendFile, mkdir, mkdtemp, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ImageEvent } from '../../shared/contracts.js';
import { imageEventSchema } from '../../shared/contracts.js';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { scanFolder, watchFolder, type FolderWatcher } from '../../shared/adapters/local/folder-watcher.js';

/** The watched folder emits GCS-shaped events: finalize on new/replaced files, delete on unlink. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out waiting for watcher events');
    await sleep(25);
  }
}

describe('watchFolder', () => {
  let dir: string;
  let store: FolderBlobStore;
  let watcher: FolderWatcher | undefined;
  const events: ImageEvent[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'iss-watch-'));
    store = new FolderBlobStore(dir);
    events.length = 0;
  });
  afterEach(async () => {
    await watcher?.close();
    watcher = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('emits finalize for existing files unless ignoreInitial, then for new and replaced files, and delete with the last generation', async () => {
    await writeFile(path.join(dir, 'old.jpg'), 'old');
    watcher = watchFolder(store, { stabilityMs: 100 }, (e) => void events.push(e));
    await watcher.ready;
    expect(events.map((e) => [e.eventType, e.name])).toEqual([['finalize', 'old.jpg']]);

    await mkdir(path.join(dir, 'sub'));
    await writeFile(path.join(dir, 'sub', 'new.png'), 'new!');
    await until(() => events.length === 2);
    const created = events[1]!;
    expect(imageEventSchema.parse(created)).toEqual(created);
    expect(created).toMatchObject({ bucket: dir, name: 'sub/new.png', eventType: 'finalize', contentType: 'image/png', size: 4 });
    expect(created.generation).toBe((await store.stat('sub/new.png'))!.generation);

    // Replace with an explicitly newer mtime: a newer generation.
    await writeFile(path.join(dir, 'sub', 'new.png'), 'replaced');
    const later = new Date(Date.now() + 5000);
    await utimes(path.join(dir, 'sub', 'new.png'), later, later);
    await until(() => events.length >= 3);
    await sleep(300);
    const replaced = events.filter((e) => e.name === 'sub/new.png' && e.eventType === 'finalize').at(-1)!;
    expect(BigInt(replaced.generation) > BigInt(created.generation)).toBe(true);
    expect(replaced.size).toBe(8);

    const count = events.length;
    await unlink(path.join(dir, 'sub', 'new.png'));
    await until(() => events.length === count + 1);
    expect(events.at(-1)).toMatchObject({ eventType: 'delete', name: 'sub/new.png', generation: replaced.generation });
  });

  it('skips hidden and temporary files, and existing files with ignoreInitial', async () => {
    await writeFile(path.join(dir, 'existing.jpg'), 'x');
    watcher = watchFolder(store, { ignoreInitial: true, stabilityMs: 100 }, (e) => void events.push(e));
    await watcher.ready;
    await mkdir(path.join(dir, '.hidden'));
    await writeFile(path.join(dir, '.hidden', 'a.jpg'), 'x');
    await writeFile(path.join(dir, '.dot.jpg'), 'x');
    await writeFile(path.join(dir, 'upload.jpg.part'), 'x');
    await writeFile(path.join(dir, 'upload.tmp'), 'x');
    await writeFile(path.join(dir, 'backup.jpg~'), 'x');
    await writeFile(path.join(dir, 'visible.jpg'), 'x');
    await until(() => events.length >= 1);
    await sleep(400);
    expect(events.map((e) => e.name)).toEqual(['visible.jpg']);
    // The delete of a file present before start still carries its generation.
    const gen = (await store.stat('existing.jpg'))!.generation;
    await unlink(path.join(dir, 'existing.jpg'));
    await until(() => events.length === 2);
    expect(events[1]).toMatchObject({ eventType: 'delete', name: 'existing.jpg', generation: gen });
  });

  it('waits for a file being written to settle before emitting it', async () => {
    watcher = watchFolder(store, { stabilityMs: 300 }, (e) => void events.push(e));
    await watcher.ready;
    const file = path.join(dir, 'slow.jpg');
    await writeFile(file, 'part1-');
    await sleep(100);
    await appendFile(file, 'part2-');
    await sleep(100);
    await appendFile(file, 'part3');
    await until(() => events.length >= 1);
    await sleep(400);
    expect(events).toHaveLength(1);
    expect(events[0]!.size).toBe('part1-part2-part3'.length);
  });
});

describe('scanFolder', () => {
  it('returns a finalize event for every visible file', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'iss-scan-'));
    try {
      const store = new FolderBlobStore(dir);
      await store.write('a/1.jpg', 'x');
      await store.write('b.webp', 'yy');
      await writeFile(path.join(dir, '.secret.jpg'), 'z');
      const events = await scanFolder(store);
      expect(events.map((e) => [e.eventType, e.name, e.contentType, e.size])).toEqual([
        ['finalize', 'a/1.jpg', 'image/jpeg', 1],
        ['finalize', 'b.webp', 'image/webp', 2],
      ]);
      for (const e of events) expect(imageEventSchema.parse(e)).toEqual(e);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
