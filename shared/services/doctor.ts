import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TOPICS } from '../contracts.js';
import { AppError, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import type { VectorIndexCatalog } from '../ports/vector-index.js';

/**
 * `imgsearch doctor [--repair]`: what can be left wrong in a local data directory, and its repair.
 *  - model/index mismatch: the registry's active model is not the one the live index was built
 *    with (a promotion or rollback cut short). Repair: the registry follows the live index (what
 *    searches use), so ingestion embeds with that model again; the other model stays registered
 *    and can be promoted again, which rebuilds its index in the promotion order.
 *  - stale leases: queue messages leased by a process that is gone. Repair: handed back at once
 *    (instead of after the lease deadline).
 *  - orphaned temp files: `<file>.<pid>.<hex>.tmp` of atomic writes whose process is gone, and
 *    stale writer locks set aside. Repair: deleted.
 *  - duplicate feature rows (two writers at once, before the writer lock existed): promotions fail
 *    their count check. Repair: the extra rows are deleted, keeping each image's newest generation.
 *    (An image has one record per image tower; only repeats within a tower are duplicates.)
 * Checks only read; repairs run under the data directory's writer lock (the caller holds it).
 */
export type FindingKind = 'model-index-mismatch' | 'stale-leases' | 'orphaned-temp-files' | 'duplicate-features';

export interface Finding {
  kind: FindingKind;
  detail: string;
  /** What --repair did (null when not repaired). */
  repaired: string | null;
}

/** The queue's lease hand-back (the local FileQueue). */
export interface LeaseReleaser {
  releaseAllLeases(topic: string, reason: string): Promise<number>;
  stats(topic: string): Promise<{ inflight: number }>;
}

export interface DoctorDeps {
  home: string;
  registry: ModelRegistry;
  catalog: VectorIndexCatalog;
  /** The feature store's rows beyond one per image (per tower), and their removal (keeping the newest). */
  features: { duplicates(options: { remove: boolean }): Promise<{ ids: number; extraRows: number; examples: string[]; removed: number }> };
  queue: LeaseReleaser;
  logger: Logger;
  /** Whether a process other than this one may hold leases (a live writer): leases are then not stale. */
  otherWriterAlive: boolean;
}

/** Hands back every lease of every topic; for the one writer of a data directory (see home-lock.ts). */
export async function releaseOrphanedLeases(queue: LeaseReleaser, reason: string): Promise<number> {
  let released = 0;
  for (const topic of Object.values(TOPICS)) released += await queue.releaseAllLeases(topic, reason);
  return released;
}

export async function diagnose(deps: DoctorDeps, options: { repair: boolean }): Promise<Finding[]> {
  const findings: Finding[] = [];
  const { repair } = options;

  const active = await deps.registry.active();
  const live = await deps.catalog.live();
  if (active && live && active.version !== live.modelVersion) {
    const finding: Finding = {
      kind: 'model-index-mismatch',
      detail: `the active model is ${active.version} but the live index ${live.name} holds vectors of ${live.modelVersion}`,
      repaired: null,
    };
    if (repair) {
      if (await deps.registry.get(live.modelVersion)) {
        await deps.registry.promote(live.modelVersion);
        finding.repaired = `${live.modelVersion} made active again (the model of the live index); \`imgsearch model promote ${active.version}\` switches both`;
      } else {
        finding.repaired = null;
        finding.detail += `; ${live.modelVersion} is not registered: run \`imgsearch model promote ${active.version}\` to rebuild its index`;
      }
    }
    findings.push(finding);
  }

  if (!deps.otherWriterAlive) {
    let leased = 0;
    for (const topic of Object.values(TOPICS)) leased += (await deps.queue.stats(topic)).inflight;
    if (leased > 0) {
      const finding: Finding = { kind: 'stale-leases', detail: `${leased} queue messages are leased by a process that is gone`, repaired: null };
      if (repair) finding.repaired = `${await releaseOrphanedLeases(deps.queue, 'released by imgsearch doctor --repair')} handed back for delivery`;
      findings.push(finding);
    }
  }

  const orphans = await orphanedTempFiles(deps.home);
  if (orphans.length > 0) {
    const finding: Finding = {
      kind: 'orphaned-temp-files',
      detail: `${orphans.length} temporary files left by processes that are gone (${orphans
        .slice(0, 3)
        .map((f) => path.relative(deps.home, f))
        .join(', ')}${orphans.length > 3 ? ', …' : ''})`,
      repaired: null,
    };
    if (repair) {
      let removed = 0;
      for (const file of orphans) {
        try {
          await fs.rm(file, { force: true });
          removed++;
        } catch (err) {
          deps.logger.warn({ err, file }, 'could not delete a temporary file');
        }
      }
      finding.repaired = `${removed} deleted`;
    }
    findings.push(finding);
  }

  const duplicates = await readDuplicates(deps.features, { remove: false });
  if (duplicates.extraRows > 0) {
    const finding: Finding = {
      kind: 'duplicate-features',
      detail: `${duplicates.ids} images have more than one feature row (${duplicates.extraRows} extra rows, e.g. ${duplicates.examples.join(', ')}): promotions fail their count check`,
      repaired: null,
    };
    if (repair) finding.repaired = `${(await readDuplicates(deps.features, { remove: true })).removed} extra rows deleted, the newest row of each image kept`;
    findings.push(finding);
  }
  return findings;
}

/** `<target>.<pid>.<12 hex>.tmp` (atomic-file.ts) and `writer.lock.stale.<pid>.<hex>` (home-lock.ts) whose pid is gone. */
const TEMP_NAME = /\.(\d+)\.[0-9a-f]{12}\.tmp$|^writer\.lock\.stale\.(\d+)\.[0-9a-f]+$/;

async function orphanedTempFiles(home: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const full = path.join(dir, e.name);
      // LanceDB's own files are LanceDB's business.
      if (e.isDirectory() && !e.name.endsWith('.lance') && depth < 6) await walk(full, depth + 1);
      else if (e.isFile()) {
        const m = TEMP_NAME.exec(e.name);
        const pid = Number(m?.[1] ?? m?.[2]);
        if (m && pid !== process.pid && !pidRunning(pid)) out.push(full);
      }
    }
  };
  await walk(home, 0);
  return out;
}

function pidRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

async function readDuplicates(features: DoctorDeps['features'], options: { remove: boolean }) {
  try {
    return await features.duplicates(options);
  } catch (err) {
    throw new AppError(`could not ${options.remove ? 'repair' : 'read'} the feature store: ${errorMessage(err)}`, { cause: err });
  }
}
