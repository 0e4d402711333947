import path from 'node:path';
import type { Command } from 'commander';
import { NotFoundError, errorMessage } from '../../shared/errors.js';
import { UsageError, openRuntime, printOutput } from '../options.js';

/**
 * `imgsearch model pull clip-vit-b32`: a CLIP image + text tower as ONNX, registered (not
 * promoted). Sources: the public files (pinned SHA-256 and sizes), an https:// mirror serving the
 * same names (checked against the pinned hashes, or those given with --sha256), or a folder
 * (offline, used as is). The download and registration live in
 * shared/services/model-pull.ts, shared with the cloud bootstrap job.
 */
export function registerModelPullCommand(model: Command): void {
  model
    .command('pull')
    .argument('<name>', 'model to fetch: clip-vit-b32')
    .description(
      'fetch an ONNX CLIP (image + text towers + BPE merges) and register it (not promoted: `imgsearch model promote <version>` re-embeds and switches)',
    )
    .option('--from <dirOrUrl>', 'a folder holding the files (offline), or an https:// mirror base URL serving the canonical file names')
    .option(
      '--sha256 <name=hex...>',
      'expected SHA-256 of a downloaded file, e.g. vision_model.onnx=<64 hex digits>, for a mirror serving another export (default: the pinned hashes)',
    )
    .option('--json', 'print {schemaVersion, version, registered, manifest}')
    .action(async (name: string, opts: { from?: string; sha256?: string[]; json?: boolean }, command: Command) => {
      const { CLIP_VIT_B32, parseMirrorUrl, pullClip } = await import('../../shared/services/model-pull.js');
      if (name !== CLIP_VIT_B32.name) throw new NotFoundError(`unknown model ${name}; available: ${CLIP_VIT_B32.name}`);
      const sha256 = opts.sha256 ? parseSha256Option(opts.sha256, Object.keys(CLIP_VIT_B32.sha256)) : undefined;
      // Anything with a scheme is a URL (refused by the pull unless https://), never a folder name.
      const isUrl = opts.from !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(opts.from);
      if (sha256 && opts.from !== undefined && !isUrl) throw new UsageError('--sha256 checks downloads: it does not apply to --from <folder>');
      if (isUrl) {
        // Refused before anything is opened: plain HTTP, not a URL.
        try {
          parseMirrorUrl(opts.from!);
        } catch (err) {
          throw new UsageError(errorMessage(err));
        }
      }
      const runtime = await openRuntime(command, { writer: true });
      try {
        const result = await pullClip(
          runtime.registry,
          {
            dir: opts.from && !isUrl ? opts.from : undefined,
            url: isUrl ? opts.from : undefined,
            cacheDir: path.join(runtime.config.paths.cache, 'downloads', name),
            sha256,
          },
          (s) => process.stderr.write(`${s}\n`),
        );
        if (opts.json) return printOutput('model pull', result);
        process.stdout.write(
          `${result.registered ? 'registered' : 'already registered:'} ${result.version} (${result.manifest.dimension}-d image and text embeddings)\n` +
            `activate with \`imgsearch model promote ${result.version}\` (every image is re-embedded by the new image tower)\n`,
        );
      } finally {
        await runtime.close();
      }
    });
}

/** `--sha256 a=hex b=hex` or `--sha256 a=hex,b=hex`: expected SHA-256 per canonical file name. */
function parseSha256Option(values: string[], known: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values.flatMap((v) => v.split(',')).filter(Boolean)) {
    const m = /^([^=]+)=([0-9a-fA-F]{64})$/.exec(item.trim());
    if (!m || !known.includes(m[1]!)) {
      throw new UsageError(`--sha256 ${JSON.stringify(item)}: expected <name>=<64 hex digits> with a name among ${known.join(', ')}`);
    }
    out[m[1]!] = m[2]!.toLowerCase();
  }
  return out;
}
