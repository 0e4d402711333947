import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { z } from 'zod';
import { AppError, NotFoundError } from '../../errors.js';
import type { IndexVersionInfo } from '../../ports/vector-index.js';
import { BaseIndexCatalog } from '../index-catalog-base.js';
import { KeyedMutex, SAFE_NAME, readJsonFile, writeJsonAtomic } from './atomic-file.js';
import { translatingLanceDbErrors } from './lancedb-errors.js';
import { LanceDbVectorIndex, indexTableSchema } from './lancedb-index.js';

/**
 * The embedded index's versions: one LanceDB table per version (`<alias>-v<N>`), listed with its
 * model version and dimension in `<alias>.catalog.json`, behind an alias kept in
 * `<alias>.alias.json`, so a new version can be built beside the live one and swapped in (and
 * rolled back) atomically. The rules are BaseIndexCatalog's; both files are read-modify-written
 * one change at a time per catalog directory.
 */
const aliasFileSchema = z.object({
  current: z.string().nullable(),
  previous: z.string().nullable(),
  history: z.array(z.object({ name: z.string(), at: z.string() })),
});
type AliasFile = z.infer<typeof aliasFileSchema>;

const catalogFileSchema = z.object({
  tables: z.record(z.string(), z.object({ modelVersion: z.string(), dimension: z.number().int().positive(), createdAt: z.string() })),
});
type CatalogFile = z.infer<typeof catalogFileSchema>;

const catalogMutex = new KeyedMutex();

export class LanceDbIndexCatalog extends BaseIndexCatalog<LanceDbVectorIndex> {
  protected readonly dimensionLimit = { max: 65_536, reason: 'a sanity bound of the embedded index' };
  private readonly handles = new Map<string, LanceDbVectorIndex>();

  private constructor(
    readonly dir: string,
    readonly alias: string,
    private readonly db: lancedb.Connection,
  ) {
    super();
  }

  static async open(dir: string, options: { alias?: string } = {}): Promise<LanceDbIndexCatalog> {
    const alias = options.alias ?? 'images';
    if (!SAFE_NAME.test(alias)) throw new AppError(`Invalid index alias ${JSON.stringify(alias)}: use letters, digits, '.', '_' or '-'`);
    const abs = path.resolve(dir);
    // Strong read consistency: the API, the upserter and jobs may write from other processes.
    return new LanceDbIndexCatalog(
      abs,
      alias,
      await translatingLanceDbErrors('open the index', abs, () => lancedb.connect(abs, { readConsistencyInterval: 0 })),
    );
  }

  async open(name: string): Promise<LanceDbVectorIndex> {
    const cached = this.handles.get(name);
    if (cached) return cached;
    const meta = (await this.readCatalog()).tables[name];
    if (!meta) throw new NotFoundError(`Index version ${name} does not exist in ${this.dir}`, { meta: { name } });
    const table = await this.db.openTable(name);
    const hasAnn = (await table.listIndices()).some((i) => i.columns.includes('vector'));
    const handle = new LanceDbVectorIndex(name, meta.modelVersion, meta.dimension, table, path.join(this.dir, name), hasAnn);
    this.handles.set(name, handle);
    return handle;
  }

  async versions(): Promise<IndexVersionInfo[]> {
    const [catalog, alias] = [await this.readCatalog(), await this.readAlias()];
    const out: IndexVersionInfo[] = [];
    for (const [name, meta] of Object.entries(catalog.tables)) {
      const index = await this.open(name);
      out.push({
        name,
        modelVersion: meta.modelVersion,
        dimension: meta.dimension,
        createdAt: meta.createdAt,
        count: await index.count(),
        live: alias.current === name,
      });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name, undefined, { numeric: true }));
  }

  async close(): Promise<void> {
    for (const h of this.handles.values()) h.closeTable();
    this.handles.clear();
    this.db.close();
  }

  protected async _versionNames(): Promise<string[]> {
    return [...Object.keys((await this.readCatalog()).tables), ...(await this.db.tableNames())];
  }

  protected async _createVersion(name: string, modelVersion: string, dimension: number): Promise<LanceDbVectorIndex | null> {
    const created = await this._locked(async () => {
      const catalog = await this.readCatalog();
      if (catalog.tables[name] || (await this.db.tableNames()).includes(name)) return false;
      await this.db.createEmptyTable(name, indexTableSchema(dimension));
      catalog.tables[name] = { modelVersion, dimension, createdAt: new Date().toISOString() };
      await writeJsonAtomic(this.catalogFile, catalog);
      return true;
    });
    return created ? this.open(name) : null;
  }

  protected async _aliasTargets(): Promise<string[]> {
    const { current } = await this.readAlias();
    return current ? [current] : [];
  }

  protected async _pointAlias(name: string, _targets: string[], previous: string | null): Promise<void> {
    const alias = await this.readAlias();
    await this.writeAlias({ current: name, previous, history: [...alias.history, { name, at: new Date().toISOString() }].slice(-100) });
  }

  protected async _previous(): Promise<string | null> {
    return (await this.readAlias()).previous;
  }

  protected async _forgetPrevious(name: string): Promise<void> {
    const alias = await this.readAlias();
    if (alias.previous === name) await this.writeAlias({ ...alias, previous: null });
  }

  protected async _exists(name: string): Promise<boolean> {
    return (await this.readCatalog()).tables[name] !== undefined;
  }

  protected async _drop(name: string): Promise<boolean> {
    const catalog = await this.readCatalog();
    if (!catalog.tables[name]) return false;
    this.handles.get(name)?.closeTable();
    this.handles.delete(name);
    await this.db.dropTable(name);
    delete catalog.tables[name];
    await writeJsonAtomic(this.catalogFile, catalog);
    return true;
  }

  /** Catalog and alias changes are read-modify-write: one at a time per catalog directory. */
  protected override _locked<T>(work: () => Promise<T>): Promise<T> {
    return catalogMutex.run(this.catalogFile, work);
  }

  private get aliasFile(): string {
    return path.join(this.dir, `${this.alias}.alias.json`);
  }

  private get catalogFile(): string {
    return path.join(this.dir, `${this.alias}.catalog.json`);
  }

  private async readAlias(): Promise<AliasFile> {
    const fix =
      `restore it from a backup, or replace it with {"current":"${this.alias}-v<N>","previous":null,"history":[]} naming the index version to serve ` +
      `(one of the ${this.alias}-v<N>.lance folders beside it, built with the active model); ${this.rebuildHint()}`;
    return readJsonFile(this.aliasFile, { current: null, previous: null, history: [] }, { schema: aliasFileSchema, fix });
  }

  /** The last resort for a lost alias or catalog file: a new index, every image embedded again. */
  private rebuildHint(): string {
    return `or move the folder ${this.dir} aside: the next \`imgsearch up\` or \`imgsearch ingest\` builds a new index and embeds every image of the bucket folder again`;
  }

  private async writeAlias(alias: AliasFile): Promise<void> {
    await writeJsonAtomic(this.aliasFile, alias);
  }

  private async readCatalog(): Promise<CatalogFile> {
    const fix = `restore it from a backup, ${this.rebuildHint()}`;
    return readJsonFile(this.catalogFile, { tables: {} }, { schema: catalogFileSchema, fix });
  }
}
