import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import { CorruptStateError, NotFoundError } from '../../shared/errors.js';

/**
 * The embedded catalog's own files (pics.catalog.json, pics.alias.json) and handles, on a real
 * LanceDB in a temp dir: the order `versions()` reports, unknown versions, and what a damaged file
 * tells the user. Expected values are literals.
 */
let dir: string;
let catalog: LanceDbIndexCatalog;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lancedb-catalog-files-'));
  catalog = await LanceDbIndexCatalog.open(dir, { alias: 'pics' });
});

afterEach(async () => {
  await catalog.close();
  await rm(dir, { recursive: true, force: true });
});

const catalogFile = () => path.join(dir, 'pics.catalog.json');

describe('LanceDB catalog files', () => {
  it('lists versions by creation time, then by version number (v2 before v10)', async () => {
    for (let i = 0; i < 10; i += 1) await catalog.createVersion(`m${i + 1}`, 2);
    const file = JSON.parse(await readFile(catalogFile(), 'utf8')) as { tables: Record<string, { createdAt: string }> };
    for (const [name, meta] of Object.entries(file.tables)) meta.createdAt = name === 'pics-v1' ? '2026-02-01T00:00:00.000Z' : '2026-01-01T00:00:00.000Z';
    await writeFile(catalogFile(), JSON.stringify(file));
    expect((await catalog.versions()).map((v) => v.name)).toEqual([
      'pics-v2',
      'pics-v3',
      'pics-v4',
      'pics-v5',
      'pics-v6',
      'pics-v7',
      'pics-v8',
      'pics-v9',
      'pics-v10',
      'pics-v1',
    ]);
  });

  it('opens a version once per catalog, and an unknown one is NotFound naming it', async () => {
    const created = await catalog.createVersion('m1', 2);
    expect(await catalog.open(created.name)).toBe(await catalog.open(created.name));
    const err = await catalog.open('pics-v9').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as NotFoundError).message).toBe(`Index version pics-v9 does not exist in ${dir}`);
    expect((err as NotFoundError).meta).toEqual({ name: 'pics-v9' });
  });

  it('a damaged alias file names itself and the two ways out', async () => {
    await catalog.createVersion('m1', 2);
    await writeFile(path.join(dir, 'pics.alias.json'), '{"current": "pics-v1", "prev');
    const err = await catalog.versions().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptStateError);
    const message = (err as Error).message;
    expect(message).toContain(path.join(dir, 'pics.alias.json'));
    expect(message).toContain('{"current":"pics-v<N>","previous":null,"history":[]}');
    expect(message).toContain('one of the pics-v<N>.lance folders beside it');
    expect(message).toContain(`or move the folder ${dir} aside: the next \`imgsearch up\` or \`imgsearch ingest\` builds a new index`);
  });

  it('a catalog file of the wrong shape is refused, naming the file, not read as empty', async () => {
    await catalog.createVersion('m1', 2);
    await writeFile(catalogFile(), JSON.stringify({ tables: 5 }));
    const err = await catalog.versions().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptStateError);
    expect((err as Error).message).toContain(catalogFile());
    expect((err as Error).message).toContain('restore it from a backup, or move the folder');
  });

  it('a dropped version that had been opened is forgotten, not served from its old handle', async () => {
    const v1 = await catalog.createVersion('m1', 2);
    await catalog.open(v1.name);
    await catalog.dropVersion(v1.name);
    await expect(catalog.open(v1.name)).rejects.toBeInstanceOf(NotFoundError);
  });
});
