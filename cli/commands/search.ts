import { promises as fs } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { ParseError } from '../../shared/errors.js';
import type { Hit } from '../../shared/ports/vector-index.js';
import { SearchService } from '../../shared/services/search-service.js';
import { configFrom, printJson } from '../options.js';
import { openLocalRuntime } from '../../shared/wiring/local.js';

export function parseIntIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

export function registerSearchCommand(program: Command): void {
  program
    .command('search')
    .description('search the index by image, by text, or for images similar to an indexed one')
    .option('--image <files...>', 'query image(s); several print one result list per image')
    .option('--text <query>', 'text query (needs a model with a text tower)')
    .option('--similar <id>', 'id of an indexed image')
    .option('-k, --k <n>', 'number of results', parseIntIn(1, 1000), 10)
    .option('--label <label>', 'only images with this label')
    .option('--min-score <score>', 'cut off results below this cosine similarity', Number)
    .option('--json', 'print [{id, uri, score}] best first')
    .action(
      async (opts: { image?: string[]; text?: string; similar?: string; k: number; label?: string; minScore?: number; json?: boolean }, command: Command) => {
        const modes = [opts.image, opts.text, opts.similar].filter((v) => v !== undefined).length;
        if (modes !== 1) throw new ParseError('give exactly one of --image <file>, --text <query>, --similar <id>');
        const runtime = await openLocalRuntime(configFrom(command));
        try {
          await runtime.model.get();
          // As the search service does: queries use the model the live index was built with (a
          // promotion whose reindex has not swapped the alias yet still answers, with the old model).
          const service = new SearchService(
            () => runtime.model.current(),
            () => runtime.catalog.live(),
            (version) => runtime.model.forVersion(version),
          );
          const req = { k: opts.k, minScore: opts.minScore, filter: opts.label ? { labels: [opts.label] } : undefined };
          if (opts.image && opts.image.length > 1) {
            // Batch of query images: one model load, one result list per image (JSON lines).
            for (const file of opts.image) {
              const res = await service.byImage(await readQueryImage(file), req);
              const results = res.results.map((h) => ({ id: h.id, uri: h.uri, score: h.score, labels: h.labels }));
              process.stdout.write(opts.json ? `${JSON.stringify({ query: file, results })}\n` : `${file}\n${formatHits(res.results)}`);
            }
            return;
          }
          const res = opts.image
            ? await service.byImage(await readQueryImage(opts.image[0]!), req)
            : opts.text
              ? await service.byText(opts.text, req)
              : await service.similarTo(opts.similar!, req);
          if (opts.json) return printJson(res.results.map((h) => ({ id: h.id, uri: h.uri, score: h.score, labels: h.labels })));
          process.stdout.write(res.results.length === 0 ? 'no results\n' : formatHits(res.results));
        } finally {
          await runtime.close();
        }
      },
    );
}

function formatHits(hits: Hit[]): string {
  return hits.map((h, i) => `${String(i + 1).padStart(3)}  ${h.score.toFixed(4)}  ${h.uri}${h.labels.length ? `  [${h.labels.join(', ')}]` : ''}\n`).join('');
}

async function readQueryImage(file: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new ParseError(`cannot read the query image ${file}: ${(err as Error).message}`);
  }
}
