import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-index.js';
import { lanceDbError } from '../../shared/adapters/local/lancedb-errors.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { isMachineFault } from '../../shared/backoff.js';
import { AppError } from '../../shared/errors.js';

/**
 * Issue 14, point 7: LanceDB's own error text ("Unable to created lance dataset…", Rust source
 * paths) never reaches users; the adapters say which folder and what to do, keeping the original
 * as `cause`.
 */
let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-lance-err-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('LanceDB errors at the adapter boundary', () => {
  it('the index under a file: one line naming the folder and the fix, LanceDB’s text kept as the cause', async () => {
    await fs.writeFile(path.join(dir, 'home'), 'a file where the data directory should be');
    const index = path.join(dir, 'home', 'index');
    const err = await rejection(LanceDbIndexCatalog.open(index));
    expect(err).toBeInstanceOf(AppError);
    expect(err.message).toBe(
      `cannot open the index at ${index}: a file is in the way (not a directory) (ENOTDIR); ${index} or one of its parent folders is a file: move that file away, or choose another data directory with --home`,
    );
    expect(String((err.cause as Error).message)).toMatch(/Unable to created lance dataset/);
  });

  it('a feature-store tower folder that is a file: named, with the fix', async () => {
    const store = await PerTowerFeatureStore.open(path.join(dir, 'features'));
    const tower = path.join(dir, 'features', PerTowerFeatureStore.folderOf('base'));
    await fs.mkdir(path.dirname(tower), { recursive: true });
    await fs.writeFile(tower, 'not a folder');
    const err = await rejection(
      store.put([{ id: 'a', uri: 'file:///a.png', generation: '1', baseModel: 'base', vector: Float32Array.from([1, 0]), labels: [] }]),
    );
    expect(err).toBeInstanceOf(AppError);
    expect(err.message).toMatch(new RegExp(`^cannot open the feature store at ${tower.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*; `));
    expect(err.message).not.toMatch(/lance dataset|LanceError|\.rs:\d+/);
    expect(err.cause).toBeDefined();
    await store.close();
  });

  it('a full disk, as LanceDB words it, becomes one line that still reads as a machine fault (retried by the pipeline)', () => {
    // The text LanceDB 0.x gives for ENOSPC while writing a table (captured on a 64 KB tmpfs).
    const raw = new Error(
      'lance error: LanceError(IO): No space left on device (os error 28), /usr/local/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-file-10.0.0/src/writer.rs:432:9\n' +
        'Caused by: LanceError(IO): No space left on device (os error 28), /usr/local/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-file-10.0.0/src/writer.rs:432:9\n' +
        'Caused by: No space left on device (os error 28)',
    );
    const err = lanceDbError(raw, 'write to the feature store', '/data/home/features/tower-x');
    expect(err.message).toBe(
      'cannot write to the feature store at /data/home/features/tower-x: no space left on device (ENOSPC); free some space on that disk, then run the command again (nothing already indexed is lost)',
    );
    expect(err.cause).toBe(raw);
    expect(isMachineFault(err)).toBe(true);
  });

  it('an unknown LanceDB failure keeps only its innermost reason, without source paths', () => {
    const err = lanceDbError(
      new Error(
        'lance error: LanceError(IO): Corrupt file, /usr/local/cargo/x/src/reader.rs:10:2\nCaused by: Invalid manifest magic, /usr/local/cargo/x/src/y.rs:4:1',
      ),
      'open the index',
      '/h/index',
    );
    expect(err.message).toBe('cannot open the index at /h/index: LanceDB failed (Invalid manifest magic); run `imgsearch doctor` to check the data directory');
  });
});
