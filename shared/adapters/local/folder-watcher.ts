import { promises as fs, type BigIntStats, type Dirent } from 'node:fs';
import path from 'node:path';
import { watch } from 'chokidar';
import { isMachineFault, retryWithBackoff } from '../../backoff.js';
import { documentId, objectUri, type ImageEvent } from '../../contracts.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { BlobInfo } from '../../ports/blob-store.js';
import type { RejectionLog } from '../../ports/rejection-log.js';
import { isNotFound } from './atomic-file.js';
import { generationOf, isIgnoredName, type FolderBlobStore } from './folder-blob-store.js';

/** A file in the bucket folder that is not an object of the bucket, and why (listed by `status`). */
export interface IgnoredEntry {
  name: string;
  reason: 'hidden' | 'partial-write' | 'symlink' | 'not-a-regular-file';
  detail: string;
}

const IGNORED_DETAIL: Record<IgnoredEntry['reason'], string> = {
  hidden: "hidden (its name or a folder above it starts with '.'), so not an object of the bucket",
  'partial-write': 'named like a file still being written (.tmp, .part or a trailing ~)',
  symlink: 'a symbolic link: links are not followed, since their target may lie outside the bucket folder',
  'not-a-regular-file': 'not a regular file (a pipe, socket or device)',
};

/**
 * Why a path of the bucket folder is not an object, or null when it is one: the same rules as
 * FolderBlobStore.list(), which lists regular files only and skips `isIgnoredName` names.
 */
export function ignoredReason(name: string, kind: Pick<Dirent | BigIntStats, 'isFile' | 'isSymbolicLink'>): IgnoredEntry | null {
  const reason: IgnoredEntry['reason'] | null = name.split('/').some((part) => part.startsWith('.'))
    ? 'hidden'
    : isIgnoredName(name)
      ? 'partial-write'
      : kind.isSymbolicLink()
        ? 'symlink'
        : !kind.isFile()
          ? 'not-a-regular-file'
          : null;
  return reason ? { name, reason, detail: IGNORED_DETAIL[reason] } : null;
}

/** Every entry of the folder (hidden folders included) that is not an object, with its reason. */
export async function* ignoredEntries(store: FolderBlobStore, dir: string = store.bucket): AsyncIterable<IgnoredEntry> {
  let entries: Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const entry of entries) {
    const abs = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      yield* ignoredEntries(store, abs);
      continue;
    }
    const ignored = ignoredReason(store.nameOf(abs), entry);
    if (ignored) yield ignored;
  }
}

/** Records an ignored entry (or forgets it) in `log`, keyed like a document of the bucket. */
export async function recordIgnored(log: RejectionLog, bucket: string, entry: IgnoredEntry, generation = '0'): Promise<void> {
  await log.record({
    id: documentId(bucket, entry.name),
    uri: objectUri(bucket, entry.name),
    generation,
    reason: entry.reason,
    detail: entry.detail,
    at: new Date().toISOString(),
  });
}

/**
 * Turns file-system changes in a folder into the same events GCS emits (object finalized /
 * deleted), so the local pipeline runs the cloud handlers unchanged.
 */
export interface FolderWatcher {
  /** Resolves once the initial scan is done (and its events, unless ignored, were emitted). */
  ready: Promise<void>;
  close(): Promise<void>;
}

export interface WatchOptions {
  /** Do not emit events for files already present at start. */
  ignoreInitial?: boolean;
  /** How long a file's size must stay unchanged before it counts as written (ms). */
  stabilityMs?: number;
  logger?: Logger;
  /** Where files that are not objects (hidden, partial, symlinks…) are listed with their reason. */
  ignored?: RejectionLog;
  /** A failed event handler, before it is tried again (after a backoff), and its next success. */
  onFailure?(err: unknown): void;
  onSuccess?(): void;
}

export function finalizeEvent(info: BlobInfo): ImageEvent {
  return {
    bucket: info.bucket,
    name: info.name,
    generation: info.generation,
    contentType: info.contentType,
    size: info.size,
    eventType: 'finalize',
    eventTime: info.updated,
  };
}

/** A 'finalize' event for every file already in the folder (a full rescan / backfill). */
export async function scanFolder(store: FolderBlobStore): Promise<ImageEvent[]> {
  const events: ImageEvent[] = [];
  for await (const info of store.list()) events.push(finalizeEvent(info));
  return events;
}

export function watchFolder(store: FolderBlobStore, opts: WatchOptions, onEvent: (e: ImageEvent) => void | Promise<void>): FolderWatcher {
  const logger = opts.logger ?? silentLogger;
  const stabilityMs = opts.stabilityMs ?? 300;
  // Last generation seen per object: a delete event carries it, as GCS does.
  const seen = new Map<string, BlobInfo>();
  let closed = false;
  // Events are delivered one at a time and in order (a replace then a delete of the same file).
  // A handler failing for a fault of the machine (a full disk) is retried with backoff, in order,
  // until it succeeds: a storage event is never dropped for it (GCS/Eventarc retry the same way).
  let chain: Promise<void> = Promise.resolve();
  const emit = (event: ImageEvent): void => {
    chain = chain
      .then(() =>
        retryWithBackoff(() => Promise.resolve(onEvent(event)), {
          stopped: () => closed,
          retryable: isMachineFault,
          onFailure: (err, attempt, delayMs) => {
            logger.error({ err, name: event.name, attempt, delayMs }, 'folder event handler failed; trying again');
            opts.onFailure?.(err);
          },
        }),
      )
      .then(
        () => opts.onSuccess?.(),
        (err: unknown) => logger.error({ err, name: event.name }, 'folder event handler failed'),
      );
  };
  const noteIgnored = (entry: IgnoredEntry, generation?: string): void => {
    if (!opts.ignored) return;
    const log = opts.ignored;
    chain = chain
      .then(() => recordIgnored(log, store.bucket, entry, generation))
      .catch((err: unknown) => logger.error({ err, name: entry.name }, 'could not record an ignored file'));
  };
  const forgetIgnored = (name: string): void => {
    if (!opts.ignored) return;
    const log = opts.ignored;
    chain = chain
      .then(() => log.clear(documentId(store.bucket, name)))
      .catch((err: unknown) => logger.error({ err, name }, 'could not forget an ignored file'));
  };

  const watcher = watch(store.bucket, {
    // The initial state comes from our own scan after 'ready' (below): chokidar's initial adds
    // would arrive after 'ready' when awaitWriteFinish delays them.
    ignoreInitial: true,
    persistent: true,
    // Links are reported as links (and ignored with that reason), never followed out of the folder.
    followSymlinks: false,
    // Hidden, partial and linked files are watched too: each is listed as ignored with its reason.
    awaitWriteFinish: { stabilityThreshold: stabilityMs, pollInterval: Math.max(20, Math.floor(stabilityMs / 4)) },
  });

  // Files present at start when their events are not emitted (ignoreInitial): listed in the
  // background, only so that a later delete carries the generation it had. Never used to drop an
  // event (a file changed while the listing runs must still be reported).
  const known = new Map<string, BlobInfo>();
  const record = (info: BlobInfo): void => {
    const previous = seen.get(info.name);
    seen.set(info.name, info);
    known.delete(info.name);
    // A file may be reported twice (scan + add, add + change) for one write: one event per generation.
    if (previous?.generation === info.generation) return;
    emit(finalizeEvent(info));
  };

  const onFile = async (abs: string): Promise<void> => {
    const name = store.nameOf(abs);
    try {
      const stats = await fs.lstat(abs, { bigint: true });
      if (stats.isDirectory()) return;
      const ignored = ignoredReason(name, stats);
      if (ignored) {
        seen.delete(name);
        ignoredNames.add(name);
        noteIgnored(ignored, generationOf(stats));
        return;
      }
      ignoredNames.delete(name);
      record(store.infoOf(name, stats));
    } catch (err) {
      if (!isNotFound(err)) logger.warn({ err, name }, 'cannot stat changed file');
    }
  };

  // Names listed as ignored: their removal forgets the record instead of emitting a delete.
  const ignoredNames = new Set<string>();
  const pending = new Set<Promise<void>>();
  const track = (p: Promise<void>): void => {
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };

  watcher.on('add', (abs) => track(onFile(abs)));
  watcher.on('change', (abs) => track(onFile(abs)));
  watcher.on('unlink', (abs) => {
    const name = store.nameOf(abs);
    if (ignoredNames.delete(name)) {
      forgetIgnored(name);
      return;
    }
    const last = seen.get(name) ?? known.get(name);
    seen.delete(name);
    known.delete(name);
    // A file deleted before we ever saw it: "now" is an upper bound of any generation it had.
    const generation = last?.generation ?? (BigInt(Date.now()) * 1000n).toString();
    emit({
      bucket: store.bucket,
      name,
      generation,
      contentType: last?.contentType ?? 'application/octet-stream',
      size: last?.size ?? 0,
      eventType: 'delete',
      eventTime: new Date().toISOString(),
    });
  });
  // chokidar reports regular files, links and folders only: a pipe, socket or device that appears
  // is found from the raw directory event and listed as ignored.
  watcher.on('raw', (rawEvent, evPath, details) => {
    const watchedPath = (details as { watchedPath?: string } | undefined)?.watchedPath;
    if (rawEvent !== 'rename' || !evPath || !watchedPath) return;
    const abs = path.resolve(watchedPath, evPath);
    const name = store.nameOf(abs);
    if (name.startsWith('..') || ignoredNames.has(name) || seen.has(name)) return;
    track(
      fs.lstat(abs, { bigint: true }).then(
        (stats) => {
          if (stats.isFile() || stats.isDirectory() || stats.isSymbolicLink()) return;
          const ignored = ignoredReason(name, stats);
          if (!ignored) return;
          ignoredNames.add(name);
          noteIgnored(ignored);
        },
        () => undefined,
      ),
    );
  });
  watcher.on('error', (err) => logger.error({ err }, 'folder watcher error'));

  // With ignoreInitial, what was there at start is the caller's business (`up` reconciles it with
  // the index): `ready` does not wait for a listing of the whole folder.
  let background: Promise<void> = Promise.resolve();
  const learnInitial = async (): Promise<void> => {
    for await (const info of store.list()) {
      if (closed) return;
      if (!seen.has(info.name)) known.set(info.name, info);
    }
    for await (const entry of ignoredEntries(store)) {
      if (closed) return;
      if (!seen.has(entry.name)) ignoredNames.add(entry.name);
    }
  };
  const ready = new Promise<void>((resolve) => {
    watcher.once('ready', () => resolve());
  }).then(async () => {
    if (opts.ignoreInitial === true) {
      background = learnInitial().catch((err: unknown) => logger.warn({ err }, 'could not list the folder at start'));
      return;
    }
    for await (const info of store.list()) record(info);
    for await (const entry of ignoredEntries(store)) {
      ignoredNames.add(entry.name);
      noteIgnored(entry);
    }
    await Promise.all([...pending]);
    await chain;
  });

  return {
    ready,
    async close() {
      closed = true;
      await watcher.close();
      await background;
      await Promise.all([...pending]);
      await chain;
    },
  };
}
