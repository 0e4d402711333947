import { promises as fs } from 'node:fs';
import { watch } from 'chokidar';
import type { ImageEvent } from '../../contracts.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { BlobInfo } from '../../ports/blob-store.js';
import { isNotFound } from './atomic-file.js';
import { isIgnoredName, type FolderBlobStore } from './folder-blob-store.js';

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
  // Events are delivered one at a time and in order (a replace then a delete of the same file).
  let chain: Promise<void> = Promise.resolve();
  const emit = (event: ImageEvent): void => {
    chain = chain.then(() => onEvent(event)).catch((err: unknown) => logger.error({ err, name: event.name }, 'folder event handler failed'));
  };

  const watcher = watch(store.bucket, {
    // The initial state comes from our own scan after 'ready' (below): chokidar's initial adds
    // would arrive after 'ready' when awaitWriteFinish delays them.
    ignoreInitial: true,
    persistent: true,
    ignored: (p: string) => p !== store.bucket && isIgnoredName(store.nameOf(p)),
    awaitWriteFinish: { stabilityThreshold: stabilityMs, pollInterval: Math.max(20, Math.floor(stabilityMs / 4)) },
  });

  const record = (info: BlobInfo, silent: boolean): void => {
    const previous = seen.get(info.name);
    seen.set(info.name, info);
    // A file may be reported twice (scan + add, add + change) for one write: one event per generation.
    if (silent || previous?.generation === info.generation) return;
    emit(finalizeEvent(info));
  };

  const onFile = async (abs: string): Promise<void> => {
    const name = store.nameOf(abs);
    try {
      const stats = await fs.stat(abs, { bigint: true });
      if (!stats.isFile()) return;
      record(store.infoOf(name, stats), false);
    } catch (err) {
      if (!isNotFound(err)) logger.warn({ err, name }, 'cannot stat changed file');
    }
  };

  const pending = new Set<Promise<void>>();
  const track = (p: Promise<void>): void => {
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };

  watcher.on('add', (abs) => track(onFile(abs)));
  watcher.on('change', (abs) => track(onFile(abs)));
  watcher.on('unlink', (abs) => {
    const name = store.nameOf(abs);
    const last = seen.get(name);
    seen.delete(name);
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
  watcher.on('error', (err) => logger.error({ err }, 'folder watcher error'));

  const ready = new Promise<void>((resolve) => {
    watcher.once('ready', () => resolve());
  }).then(async () => {
    for await (const info of store.list()) record(info, opts.ignoreInitial === true);
    await Promise.all([...pending]);
    await chain;
  });

  return {
    ready,
    async close() {
      await watcher.close();
      await Promise.all([...pending]);
      await chain;
    },
  };
}
