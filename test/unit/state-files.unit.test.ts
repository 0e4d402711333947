import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { readJsonFile, writeFileAtomic } from '../../shared/adapters/local/atomic-file.js';
import { JsonRejectionLog } from '../../shared/adapters/local/json-rejection-log.js';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-index.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { documentId } from '../../shared/contracts.js';
import { CorruptStateError } from '../../shared/errors.js';
import { testManifest } from '../contracts/model-registry.contract.js';
import { runCli } from '../helpers/cli.js';
import { captureLogger } from './functions-fakes.js';

/**
 * Issue 11 point 5: state files survive a crash (temp file, fsync, rename, fsync of the directory)
 * and a truncated or corrupt one gives an error naming the file and the fix — never a bare
 * "Unexpected end of JSON input" — or, where a record can be skipped safely, a warning.
 * Real files throughout: each state file is truncated the way a crash without fsync leaves it.
 */
let work: string;
beforeEach(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-state-'));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await fs.rm(work, { recursive: true, force: true });
});

/** What a crash between write and fsync leaves: the first bytes of the file, or nothing at all. */
async function truncate(file: string, keep: number): Promise<void> {
  const text = await fs.readFile(file, 'utf8');
  expect(text.length).toBeGreaterThan(keep);
  await fs.writeFile(file, text.slice(0, keep));
}

async function expectCorruptError(attempt: Promise<unknown>, file: string, fix: RegExp): Promise<void> {
  const err = await attempt.then(
    () => null,
    (e: unknown) => e as Error,
  );
  expect(err).toBeInstanceOf(CorruptStateError);
  expect(err!.message).toContain(file);
  expect(err!.message).toMatch(fix);
  expect(err!.message).not.toMatch(/^Unexpected end of JSON input/);
}

describe('the local index catalog (images.alias.json, images.catalog.json)', () => {
  async function builtCatalog(): Promise<string> {
    const dir = path.join(work, 'index');
    const catalog = await LanceDbIndexCatalog.open(dir);
    await catalog.ensureLive('m1', 4);
    await catalog.close();
    return dir;
  }

  it.each([0, 10])('a truncated alias file (%i bytes kept) is named with the fix', async (keep) => {
    const dir = await builtCatalog();
    const file = path.join(dir, 'images.alias.json');
    await truncate(file, keep);
    const catalog = await LanceDbIndexCatalog.open(dir);
    try {
      await expectCorruptError(catalog.live(), file, /restore it from a backup|images-v<N>/);
    } finally {
      await catalog.close();
    }
  });

  it('a truncated catalog file is named with the fix', async () => {
    const dir = await builtCatalog();
    const file = path.join(dir, 'images.catalog.json');
    await truncate(file, 12);
    const catalog = await LanceDbIndexCatalog.open(dir);
    try {
      await expectCorruptError(catalog.versions(), file, /restore it from a backup/);
    } finally {
      await catalog.close();
    }
  });

  it('valid JSON of the wrong shape is named too', async () => {
    const dir = await builtCatalog();
    const file = path.join(dir, 'images.alias.json');
    await fs.writeFile(file, '{"current": 3}');
    const catalog = await LanceDbIndexCatalog.open(dir);
    try {
      await expectCorruptError(catalog.live(), file, /current/);
    } finally {
      await catalog.close();
    }
  });
});

describe('the local model registry (active.json, <version>/meta.json, manifest.json)', () => {
  async function registryWithActive(): Promise<LocalModelRegistry> {
    const registry = new LocalModelRegistry(path.join(work, 'models'));
    await registry.register({ version: 'm1', parent: null, manifest: testManifest('m1'), files: { 'image.onnx': Buffer.from('w') } });
    await registry.promote('m1');
    return registry;
  }

  it('a truncated active.json is named with the fix', async () => {
    const registry = await registryWithActive();
    const file = path.join(registry.dir, 'active.json');
    await truncate(file, 15);
    await expectCorruptError(registry.active(), file, /restore it from a backup.*"active"/);
  });

  it.each(['meta.json', 'manifest.json'])('a truncated version record (%s) is named with the fix', async (name) => {
    const registry = await registryWithActive();
    const file = path.join(registry.dir, 'm1', name);
    await truncate(file, 20);
    await expectCorruptError(registry.get('m1'), file, /restore it from a backup/);
  });

  it('`imgsearch status` on a data directory whose active.json is truncated: exit 1, the file and the fix on stderr', async () => {
    const home = path.join(work, 'home');
    const registry = new LocalModelRegistry(path.join(home, 'models'));
    await registry.register({ version: 'm1', parent: null, manifest: testManifest('m1'), files: { 'image.onnx': Buffer.from('w') } });
    await registry.promote('m1');
    const file = path.join(home, 'models', 'active.json');
    await truncate(file, 9);
    const result = await runCli(['status'], { cwd: work, env: { IMGSEARCH_HOME: home, IMGSEARCH_BUCKET_DIR: path.join(work, 'bucket') } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(file);
    expect(result.stderr).toMatch(/restore it from a backup/);
    expect(result.stderr).not.toMatch(/imgsearch: Unexpected end of JSON input/);
  }, 60_000);
});

describe('rejection records (one JSON file per id)', () => {
  const rejection = (name: string, at: string) => ({
    id: documentId('/b', name),
    uri: `file:///b/${name}`,
    generation: '10',
    reason: 'corrupt-image',
    detail: 'bad header',
    at,
  });

  it('a truncated record is skipped with a warning naming it; the others are listed', async () => {
    const { logger, lines } = captureLogger();
    const dir = path.join(work, 'rejected');
    const log = new JsonRejectionLog(dir, { logger });
    const good = rejection('good.jpg', '2024-01-02T00:00:00.000Z');
    const bad = rejection('bad.jpg', '2024-01-01T00:00:00.000Z');
    await log.record(good);
    await log.record(bad);
    const badFile = path.join(dir, `${bad.id}.json`);
    await truncate(badFile, 7);
    expect(await log.list()).toEqual([good]);
    const warning = lines().find((l) => l.level === 40 || l.level === 'warn' || l.severity === 'WARNING');
    expect(JSON.stringify(warning)).toContain(badFile);
  });

  it('recording over a truncated record replaces it (it does not fail for good)', async () => {
    const { logger } = captureLogger();
    const dir = path.join(work, 'rejected');
    const log = new JsonRejectionLog(dir, { logger });
    const first = rejection('x.jpg', '2024-01-01T00:00:00.000Z');
    await log.record(first);
    await truncate(path.join(dir, `${first.id}.json`), 3);
    const again = { ...first, generation: '11', at: '2024-01-05T00:00:00.000Z' };
    await log.record(again);
    expect(await log.list()).toEqual([again]);
  });
});

describe('writeFileAtomic: temp file, fsync, rename, fsync of the directory', () => {
  it('syncs the file before the rename and the directory after it', async () => {
    const events: string[] = [];
    const target = path.join(work, 'sub', 'state.json');
    const realOpen = fs.open.bind(fs);
    vi.spyOn(fs, 'open').mockImplementation(async (...args: Parameters<typeof fs.open>) => {
      const handle = await realOpen(...args);
      const name = String(args[0]) === path.dirname(target) ? 'dir' : path.basename(String(args[0])).endsWith('.tmp') ? 'tmp' : String(args[0]);
      const realSync = handle.sync.bind(handle);
      handle.sync = async () => {
        events.push(`sync ${name}`);
        return realSync();
      };
      return handle;
    });
    const realRename = fs.rename.bind(fs);
    vi.spyOn(fs, 'rename').mockImplementation(async (from, to) => {
      events.push(`rename ${path.basename(String(to))}`);
      return realRename(from, to);
    });
    await writeFileAtomic(target, '{"a":1}');
    expect(events).toEqual(['sync tmp', 'rename state.json', 'sync dir']);
    expect(await fs.readFile(target, 'utf8')).toBe('{"a":1}');
    expect(await fs.readdir(path.dirname(target))).toEqual(['state.json']);
  });

  it('leaves no temp file behind when the rename fails', async () => {
    const target = path.join(work, 'taken');
    await fs.mkdir(path.join(target, 'child'), { recursive: true });
    await expect(writeFileAtomic(target, 'x')).rejects.toThrow();
    expect((await fs.readdir(work)).sort()).toEqual(['taken']);
  });

  it('readJsonFile: a missing file gives the fallback; an empty or cut one a CorruptStateError naming it', async () => {
    const file = path.join(work, 'x.json');
    expect(await readJsonFile(file, { a: 0 })).toEqual({ a: 0 });
    await fs.writeFile(file, '');
    await expectCorruptError(readJsonFile(file, { a: 0 }, { fix: 'restore it from a backup' }), file, /restore it from a backup/);
  });
});

describe('the file queue: a published message survives a power cut', () => {
  it('syncs each message before its rename into ready/, and ready/ after the renames', async () => {
    const { FileQueue } = await import('../../shared/adapters/local/file-queue.js');
    const queue = new FileQueue(path.join(work, 'queue'), { maxDeliveryAttempts: 3 });
    const ready = path.join(work, 'queue', 'image-events', 'ready');
    const events: string[] = [];
    const realOpen = fs.open.bind(fs);
    vi.spyOn(fs, 'open').mockImplementation(async (...args: Parameters<typeof fs.open>) => {
      const handle = await realOpen(...args);
      const name = String(args[0]) === ready ? 'ready/' : path.basename(String(args[0])).endsWith('.tmp') ? 'message' : path.basename(String(args[0]));
      const realSync = handle.sync.bind(handle);
      handle.sync = async () => {
        events.push(`sync ${name}`);
        return realSync();
      };
      return handle;
    });
    const realRename = fs.rename.bind(fs);
    vi.spyOn(fs, 'rename').mockImplementation(async (from, to) => {
      if (path.dirname(String(to)) === ready) events.push('rename into ready/');
      return realRename(from, to);
    });
    await queue.publishBatch('image-events', [{ data: { n: 1 } }, { data: { n: 2 } }]);
    expect(events.filter((e) => e === 'sync message')).toHaveLength(2);
    expect(events.slice(-3)).toEqual(['rename into ready/', 'rename into ready/', 'sync ready/']);
  });
});
