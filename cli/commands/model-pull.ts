import path from 'node:path';
import type { Command } from 'commander';
import { NotFoundError } from '../../shared/errors.js';
import { CLIP_VIT_B32, pullClip } from '../../shared/services/model-pull.js';
import { configFrom, printJson } from '../options.js';
import { openLocalRuntime } from '../../shared/wiring/local.js';

/**
 * `imgsearch model pull clip-vit-b32`: a CLIP image + text tower as ONNX, registered (not
 * promoted). Sources: the public files (pinned, SHA-256 checked), a mirror URL serving the same
 * names, or a folder (offline). The download and registration live in
 * shared/services/model-pull.ts, shared with the cloud bootstrap job.
 */
export function registerModelPullCommand(model: Command): void {
  model
    .command('pull')
    .argument('<name>', 'model to fetch: clip-vit-b32')
    .description(
      'fetch an ONNX CLIP (image + text towers + BPE merges) and register it (not promoted: `imgsearch model promote <version>` re-embeds and switches)',
    )
    .option('--from <dirOrUrl>', 'a folder holding the files (offline), or a mirror base URL')
    .option('--json', 'print {version, registered, manifest}')
    .action(async (name: string, opts: { from?: string; json?: boolean }, command: Command) => {
      if (name !== CLIP_VIT_B32.name) throw new NotFoundError(`unknown model ${name}; available: ${CLIP_VIT_B32.name}`);
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        const isUrl = opts.from !== undefined && /^https?:\/\//.test(opts.from);
        const result = await pullClip(
          runtime.registry,
          {
            dir: opts.from && !isUrl ? opts.from : undefined,
            url: isUrl ? opts.from : undefined,
            cacheDir: path.join(runtime.config.paths.cache, 'downloads', name),
          },
          (s) => process.stderr.write(`${s}\n`),
        );
        if (opts.json) return printJson(result);
        process.stdout.write(
          `${result.registered ? 'registered' : 'already registered:'} ${result.version} (${result.manifest.dimension}-d image and text embeddings)\n` +
            `activate with \`imgsearch model promote ${result.version}\` (every image is re-embedded by the new image tower)\n`,
        );
      } finally {
        await runtime.close();
      }
    });
}
