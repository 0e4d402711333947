import { AppError, NotFoundError, ParseError } from '../errors.js';
import type { IndexVersionInfo, VectorIndex, VectorIndexCatalog } from '../ports/vector-index.js';

/**
 * The alias rules both index catalogs follow (embedded LanceDB, OpenSearch), kept above a few
 * engine primitives (the `_` methods), the way Powertools' BasePersistenceLayer keeps idempotency
 * above `_getRecord/_putRecord`:
 *  - versions are named `<alias>-v<N>`, N one more than any version that exists;
 *  - the alias points at one version; a swap remembers the version it pointed at before, and
 *    `rollback` swaps back to it (if it still exists);
 *  - the live version cannot be dropped; dropping the remembered one forgets it.
 */
export abstract class BaseIndexCatalog<I extends VectorIndex = VectorIndex> implements VectorIndexCatalog {
  abstract readonly alias: string;
  private pattern: RegExp | undefined;
  /** The largest vector dimension a version may have, and where that limit comes from. */
  protected abstract readonly dimensionLimit: { max: number; reason: string };

  abstract open(name: string): Promise<I>;
  abstract versions(): Promise<IndexVersionInfo[]>;
  abstract close(): Promise<void>;

  /** Names of the versions that exist (any name; those not `<alias>-v<N>` are ignored). */
  protected abstract _versionNames(): Promise<string[]>;
  /** Creates the empty version `name`; null when that name was taken meanwhile (the next N is tried). */
  protected abstract _createVersion(name: string, modelVersion: string, dimension: number): Promise<I | null>;
  /** The versions the alias points at (one, or none before the first swap). */
  protected abstract _aliasTargets(): Promise<string[]>;
  /** Points the alias at `name` alone (moving it off `targets`) and remembers `previous`. */
  protected abstract _pointAlias(name: string, targets: string[], previous: string | null): Promise<void>;
  /** The version the alias pointed at before the last swap, if remembered. */
  protected abstract _previous(): Promise<string | null>;
  /** Forgets `name` as the previous version if it is the one remembered (it is being dropped). */
  protected abstract _forgetPrevious(name: string): Promise<void>;
  protected abstract _exists(name: string): Promise<boolean>;
  /** Drops version `name`; false when it does not exist. */
  protected abstract _drop(name: string): Promise<boolean>;

  /** Runs alias changes one at a time where the engine does not order them itself (default: as is). */
  protected _locked<T>(work: () => Promise<T>): Promise<T> {
    return work();
  }

  async live(): Promise<I | null> {
    const targets = await this._aliasTargets();
    if (targets.length > 1) {
      throw new AppError(`Alias ${this.alias} points at ${targets.length} indices (${targets.join(', ')}); expected one. Fix it with swapAlias.`);
    }
    return targets[0] ? this.open(targets[0]) : null;
  }

  async ensureLive(modelVersion: string, dimension: number): Promise<I> {
    const live = await this.live();
    if (live) return live;
    const created = await this.createVersion(modelVersion, dimension);
    await this.swapAlias(created.name);
    return created;
  }

  async createVersion(modelVersion: string, dimension: number): Promise<I> {
    if (!modelVersion) throw new ParseError('createVersion: modelVersion is required');
    const { max, reason } = this.dimensionLimit;
    if (!Number.isInteger(dimension) || dimension < 1 || dimension > max) {
      throw new ParseError(`createVersion: dimension must be a whole number from 1 to ${max} (${reason}), got ${dimension}`);
    }
    // Two creators may pick the same N; the loser takes the next.
    for (let tries = 0; tries < 5; tries++) {
      const n = Math.max(0, ...(await this._versionNames()).map((v) => this.versionNumber(v))) + 1;
      const created = await this._createVersion(`${this.alias}-v${n}`, modelVersion, dimension);
      if (created) return created;
    }
    throw new AppError(`Could not create a new version of ${this.alias}: names kept being taken by concurrent creators`);
  }

  swapAlias(name: string): Promise<string | null> {
    return this._locked(() => this.swap(name));
  }

  rollback(): Promise<string> {
    return this._locked(async () => {
      const previous = await this._previous();
      if (!previous) throw new AppError(`Cannot roll back alias ${this.alias}: there is no previous index version`);
      if (!(await this._exists(previous))) throw new AppError(`Cannot roll back alias ${this.alias}: the previous version ${previous} was dropped`);
      await this.swap(previous);
      return previous;
    });
  }

  async dropVersion(name: string): Promise<void> {
    this.checkVersionName(name);
    await this._locked(async () => {
      if ((await this._aliasTargets()).includes(name)) throw new AppError(`Cannot drop ${name}: alias ${this.alias} points at it (swap the alias first)`);
      if (!(await this._drop(name))) throw new NotFoundError(`Index version ${name} does not exist`);
      await this._forgetPrevious(name);
    });
  }

  /** N of `<alias>-v<N>`, 0 for any other name. */
  protected versionNumber(name: string): number {
    return Number(this.versionPattern().exec(name)?.[1] ?? 0);
  }

  protected isVersionName(name: string): boolean {
    return this.versionPattern().test(name);
  }

  protected checkVersionName(name: string): void {
    if (!this.isVersionName(name)) {
      throw new NotFoundError(`${JSON.stringify(name)} is not a version of alias ${this.alias} (expected ${this.alias}-v<N>)`);
    }
  }

  private versionPattern(): RegExp {
    this.pattern ??= new RegExp(`^${this.alias.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-v(\\d+)$`);
    return this.pattern;
  }

  private async swap(name: string): Promise<string | null> {
    this.checkVersionName(name);
    await this.open(name); // NotFoundError before touching the alias
    const targets = await this._aliasTargets();
    const previous = targets[0] ?? null;
    if (targets.length === 1 && previous === name) return previous;
    await this._pointAlias(name, targets, previous);
    return previous;
  }
}
