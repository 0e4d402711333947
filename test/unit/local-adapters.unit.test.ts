import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeyedMutex } from '../../shared/adapters/local/atomic-file.js';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { FolderBlobStore, contentTypeFor, isIgnoredName } from '../../shared/adapters/local/folder-blob-store.js';
import { JsonRejectionLog } from '../../shared/adapters/local/json-rejection-log.js';
import { checkVector, generationToBigInt } from '../../shared/adapters/local/lancedb-ordered-table.js';
import { LocalJobLauncher } from '../../shared/adapters/local/local-job-launcher.js';
import { documentId } from '../../shared/contracts.js';

describe('folder blob store naming rules', () => {
  it('maps extensions to content types, case-insensitively', () => {
    expect(contentTypeFor('a/b.JPG')).toBe('image/jpeg');
    expect(contentTypeFor('x.jpeg')).toBe('image/jpeg');
    expect(contentTypeFor('x.heic')).toBe('image/heic');
    expect(contentTypeFor('x.svg')).toBe('image/svg+xml');
    expect(contentTypeFor('notes.json')).toBe('application/json');
    expect(contentTypeFor('noext')).toBe('application/octet-stream');
    expect(contentTypeFor('x.exe')).toBe('application/octet-stream');
  });

  it('ignores hidden files/dirs and partial writes', () => {
    for (const n of ['.DS_Store', '.git/x.jpg', 'a/.cache/b.png', 'x.jpg.tmp', 'y.part', 'z.jpg~', 'UP.TMP']) expect(isIgnoredName(n)).toBe(true);
    for (const n of ['a.jpg', 'dir/b.png', 'tmp/c.jpg', 'a.partial.jpg']) expect(isIgnoredName(n)).toBe(false);
  });

  it('refuses object names that escape the root', () => {
    const store = new FolderBlobStore('/data/bucket');
    expect(() => store.resolve('../etc/passwd')).toThrow(/inside/);
    expect(() => store.resolve('a/../../x')).toThrow(/inside/);
    expect(() => store.resolve('')).toThrow(/Invalid object name/);
    expect(store.resolve('a/b.jpg')).toBe(path.join('/data/bucket', 'a', 'b.jpg'));
    expect(store.uri('a/b.jpg')).toBe('file:///data/bucket/a/b.jpg');
  });
});

describe('vector and generation checks', () => {
  it('gives clear errors for bad vectors and generations', () => {
    expect(() => checkVector([1, 2] as unknown as Float32Array, 2, 'doc x')).toThrow(/Float32Array/);
    expect(() => checkVector(new Float32Array(3), 2, 'doc x')).toThrow('doc x: vector has dimension 3, expected 2');
    expect(() => checkVector(new Float32Array([1, Number.NaN]), 2, 'doc x')).toThrow(/non-finite/);
    expect(generationToBigInt('1700000000000000001', 'g')).toBe(1700000000000000001n);
    expect(() => generationToBigInt('-1', 'g')).toThrow(/non-negative integer/);
    expect(() => generationToBigInt('9999999999999999999', 'g')).toThrow(/int64/);
  });
});

describe('KeyedMutex', () => {
  it('runs work for one key one at a time, in order, and survives failures', async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const job = (name: string, ms: number, fail = false) =>
      m.run('k', async () => {
        log.push(`start ${name}`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`end ${name}`);
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([job('a', 20, true), job('b', 1), m.run('other', async () => 'o')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b']);
  });
});

describe('FileQueue argument checks', () => {
  it('refuses bad options and topic names with clear errors', async () => {
    expect(() => new FileQueue('/tmp/q', { maxDeliveryAttempts: 0 })).toThrow(/maxDeliveryAttempts/);
    expect(() => new FileQueue('/tmp/q', { maxDeliveryAttempts: 2, ackDeadlineSeconds: 0 })).toThrow(/ackDeadlineSeconds/);
    const q = new FileQueue('/tmp/never-written', { maxDeliveryAttempts: 2 });
    await expect(q.publish('../escape', {})).rejects.toThrow(/Invalid topic name/);
    await expect(q.publish('ok-topic', undefined)).rejects.toThrow(/undefined/);
    await expect(q.pull('ok-topic', { maxMessages: 1, ackDeadlineSeconds: -1 })).rejects.toThrow(/ackDeadlineSeconds/);
  });
});

describe('LocalJobLauncher', () => {
  it('runs a job once at a time, records success and failure with the error', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seen: Record<string, string>[] = [];
    const launcher = new LocalJobLauncher({
      embed: async (args) => {
        seen.push(args);
        await gate;
      },
      broken: async () => {
        throw new Error('disk full');
      },
    });
    const first = await launcher.run('embed', { batch: '1' });
    expect(first.state).toBe('running');
    const second = await launcher.run('embed', { batch: '2' });
    expect(second.executionId).toBe(first.executionId);
    expect((await launcher.running('embed'))?.executionId).toBe(first.executionId);
    release();
    expect((await launcher.wait(first.executionId)).state).toBe('succeeded');
    expect(await launcher.running('embed')).toBeNull();
    expect(seen).toEqual([{ batch: '1' }]);

    const failed = await launcher.wait((await launcher.run('broken', {})).executionId);
    expect(failed).toMatchObject({ state: 'failed', error: 'disk full' });
    await expect(launcher.run('nope', {})).rejects.toThrow(/Unknown job "nope"; known jobs: embed, broken/);
  });
});

describe('JsonRejectionLog', () => {
  it('records, lists newest first, and clears only up to the given generation', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'iss-rej-'));
    try {
      const log = new JsonRejectionLog(dir);
      const id = documentId('/b', 'x.jpg');
      const other = documentId('/b', 'y.jpg');
      await log.record({ id, uri: 'file:///b/x.jpg', generation: '10', reason: 'corrupt-image', detail: 'bad header', at: '2024-01-01T00:00:00.000Z' });
      await log.record({ id: other, uri: 'file:///b/y.jpg', generation: '5', reason: 'too-large', detail: '200 MB', at: '2024-01-02T00:00:00.000Z' });
      // An older generation's rejection does not replace the newer one.
      await log.record({ id, uri: 'file:///b/x.jpg', generation: '9', reason: 'empty-file', detail: '', at: '2024-01-03T00:00:00.000Z' });
      expect(await log.count()).toBe(2);
      expect((await log.list()).map((r) => [r.id, r.reason])).toEqual([
        [other, 'too-large'],
        [id, 'corrupt-image'],
      ]);
      await log.clear(id, '9');
      expect(await log.count()).toBe(2);
      await log.clear(id, '10');
      expect(await log.count()).toBe(1);
      await log.clear(other);
      expect(await log.count()).toBe(0);
      await expect(log.record({ id: '../x', uri: '', generation: '1', reason: 'r', detail: '', at: '' })).rejects.toThrow(/Invalid rejection id/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
