import { promises as fs } from 'node:fs';
import type { Command } from 'commander';
import type { Hit } from '../../shared/ports/vector-index.js';
import type { SearchResponse } from '../../shared/services/search-service.js';
import type { LocalRuntime } from '../../shared/wiring/local.js';
import { similarId } from '../image-ref.js';
import { UsageError, openRuntime, parseIntIn, parseNonEmpty, parseNumberIn, printJson } from '../options.js';

export { parseIntIn };

export function registerSearchCommand(program: Command): void {
  program
    .command('search')
    .description('search the index by image, by text, or for images similar to an indexed one (by id or by file)')
    .option('--image <files...>', 'query image(s); several print one result list per image')
    .option('--text <query>', 'text query (needs a model with a text tower)', parseNonEmpty('--text'))
    .option('--similar <idOrPath>', 'an indexed image: its id (shown by search) or its file path')
    .option('-k, --k <n>', 'number of results', parseIntIn(1, 1000), 10)
    .option('--label <label>', 'only images with this label (see `imgsearch labels`)', parseNonEmpty('--label'))
    .option('--min-score <score>', 'cut off results below this cosine similarity (-1 to 1)', parseNumberIn(-1, 1))
    .option(
      '--json',
      'print {schemaVersion, modelVersion, query: {kind, value}, results: [{id, uri, name, score, labels, caption?}]} best first, as the API answers (one line per image with several --image)',
    )
    .action(
      async (opts: { image?: string[]; text?: string; similar?: string; k: number; label?: string; minScore?: number; json?: boolean }, command: Command) => {
        const modes = [opts.image, opts.text, opts.similar].filter((v) => v !== undefined).length;
        if (modes !== 1) throw new UsageError('give exactly one of --image <file>, --text <query>, --similar <id or file>');
        const images = opts.image ? await Promise.all(opts.image.map(async (file) => ({ file, bytes: await readQueryImage(file) }))) : [];
        const runtime = await openRuntime(command);
        try {
          const { localSearchService } = await import('../../shared/wiring/local.js');
          const { presentSearch } = await import('../../shared/output-schemas.js');
          await runtime.model.get();
          // As the search service does: queries use the model the live index was built with (a
          // promotion whose reindex has not swapped the alias yet still answers, with the old model).
          const service = localSearchService(runtime);
          const req = { k: opts.k, minScore: opts.minScore, filter: opts.label ? { labels: [opts.label] } : undefined };
          // The JSON is the API's (shared/output-schemas.ts searchOutputSchema), without its thumbnails and feedback token.
          const json = (res: SearchResponse, query: SearchResponse['query']) => presentSearch({ ...res, query, feedback: undefined });
          let noHits = false;
          if (images.length > 1) {
            // Batch of query images: one model load, one answer per image (JSON Lines with --json).
            for (const { file, bytes } of images) {
              const res = await service.byImage(bytes, req);
              process.stdout.write(opts.json ? `${JSON.stringify(json(res, { kind: 'image', value: file }))}\n` : `${file}\n${formatHits(res.results)}`);
              if (res.results.length === 0) noHits = true;
            }
            if (noHits && opts.label) await warnUnknownLabel(runtime, opts.label);
            return;
          }
          const res = images[0]
            ? await service.byImage(images[0].bytes, req)
            : opts.text !== undefined
              ? await service.byText(opts.text, req)
              : await service.similarTo(await similarId(await runtime.liveIndex(), opts.similar!), req);
          if (res.results.length === 0 && opts.label) await warnUnknownLabel(runtime, opts.label);
          if (opts.json) return printJson(json(res, images[0] ? { kind: 'image', value: images[0].file } : res.query));
          process.stdout.write(res.results.length === 0 ? 'no results\n' : formatHits(res.results));
        } finally {
          await runtime.close();
        }
      },
    );
}

/** A --label no indexed image carries (labels are case-sensitive): say so on stderr, naming the labels it differs from only by case. */
async function warnUnknownLabel(runtime: LocalRuntime, label: string): Promise<void> {
  const { labelCounts } = await import('./labels.js');
  const known = (await labelCounts(runtime)).map((l) => l.label);
  if (known.includes(label)) return;
  const close = known.filter((l) => l.toLowerCase() === label.toLowerCase());
  const meant = close.length ? `; did you mean ${close.map((l) => `"${l}"`).join(' or ')}?` : '';
  process.stderr.write(`imgsearch: warning: no indexed image has label "${label}"${meant} (labels are case-sensitive: \`imgsearch labels\` lists them)\n`);
}

function formatHits(hits: Hit[]): string {
  return hits
    .map((h, i) => `${String(i + 1).padStart(3)}  ${h.score.toFixed(4)}  ${h.id}  ${h.uri}${h.labels.length ? `  [${h.labels.join(', ')}]` : ''}\n`)
    .join('');
}

async function readQueryImage(file: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new UsageError(`--image ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}
