import type { Command } from 'commander';
import { EXIT } from '../process.js';
import { printOutput, withRuntime } from '../options.js';

/**
 * `imgsearch rm <id or file...>`: takes images out of the index (every index version, and the
 * feature store: shared/services/removal.ts). An image whose file still exists is refused unless
 * `--delete-file`, because a watcher or the next `ingest` of its folder would add it back.
 */
export function registerRmCommand(program: Command): void {
  program
    .command('rm')
    .argument('<image...>', 'ids (shown by `imgsearch search`) or file paths of indexed images')
    .description(
      'remove images from the index; refused while the file still exists, unless --delete-file (with `imgsearch up` running, delete the file from its folder instead)',
    )
    .option('--delete-file', 'also delete the image file (otherwise an image whose file still exists is refused: it would be indexed again)')
    .option('--json', 'print {schemaVersion, results: [{id, status, uri, …}]}')
    .action(async (refs: string[], opts: { deleteFile?: boolean; json?: boolean }, command: Command) => {
      await removing(async () =>
        withRuntime(
          command,
          async (runtime) => {
            const { promises: fs } = await import('node:fs');
            const { removeImages } = await import('../../shared/services/removal.js');
            const { imageIdOf } = await import('../image-ref.js');
            const live = await runtime.catalog.live();
            const ids = await Promise.all(refs.map(async (ref) => (live ? ((await imageIdOf(live, ref)) ?? ref) : ref)));
            // Local URIs are `file://` + the absolute path, unencoded (contracts.ts objectUri).
            const filePath = (uri: string) => (uri.startsWith('file://') ? uri.slice('file://'.length) : null);
            const results = await removeImages(
              {
                catalog: runtime.catalog,
                features: runtime.features,
                source: {
                  exists: async (uri) => {
                    const file = filePath(uri);
                    return file !== null && (await fs.stat(file).catch(() => null)) !== null;
                  },
                  delete: async (uri) => {
                    const file = filePath(uri);
                    if (file) await fs.rm(file, { force: true });
                  },
                },
              },
              ids,
              { deleteFiles: opts.deleteFile === true },
            );
            if (results.some((r) => r.status !== 'removed')) process.exitCode = EXIT.failed;
            if (opts.json) return printOutput('rm', { results });
            for (const r of results) {
              if (r.status === 'removed') process.stdout.write(`removed ${r.id}  ${r.uri}${r.fileDeleted ? ' (file deleted)' : ''}\n`);
              else if (r.status === 'not-found') process.stderr.write(`imgsearch: ${r.id}: no indexed image has this id or path\n`);
              else process.stderr.write(`imgsearch: ${r.id}: not removed: ${r.reason}\n`);
            }
          },
          { writer: true },
        ),
      );
    });
}

/** A running `imgsearch up` holds the lock: say how to remove an image with it running. */
async function removing(work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (err) {
    const { HomeLockedError } = await import('../../shared/adapters/local/home-lock.js');
    if (err instanceof HomeLockedError && /^imgsearch up\b/.test(err.holder.command)) {
      err.message += '; with it running, delete the image file from the folder it watches: it leaves the index at once';
    }
    throw err;
  }
}
