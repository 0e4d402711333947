import { InvalidArgumentError, type Command } from 'commander';
import type { MapMethod } from '../../shared/services/collection-map.js';
import { MAP_K_MAX, MAP_K_MIN, MAP_SAMPLE_DEFAULT, MAP_SAMPLE_MAX } from '../../shared/services/collection-map-limits.js';
import { parseIntIn, printOutput, withRuntime } from '../options.js';

function parseK(value: string): 'auto' | number {
  if (value === 'auto') return 'auto';
  return parseIntIn(MAP_K_MIN, MAP_K_MAX)(value);
}

function parseMethod(value: string): MapMethod {
  if (value === 'pca' || value === 'umap') return value;
  throw new InvalidArgumentError('expected pca or umap');
}

/**
 * `imgsearch map`: the collection map the page's Map view shows (shared/services/collection-map.ts),
 * computed here over the live index: the silhouette score of each k, and each cluster's size and
 * most common label.
 */
export function registerMapCommand(program: Command): void {
  program
    .command('map')
    .description('the collection map: PCA (or UMAP) of a sample of the index, k-means clusters and the silhouette score of each k, as the page shows them')
    .option('--sample <n>', `images in the map (a seeded sample when the index holds more)`, parseIntIn(1, MAP_SAMPLE_MAX), MAP_SAMPLE_DEFAULT)
    .option('--k <k>', `clusters: auto (the best silhouette) or ${MAP_K_MIN}..${MAP_K_MAX}`, parseK, 'auto' as const)
    .option('--method <method>', 'pca (the fast first view) or umap (computed after it: waits)', parseMethod, 'pca' as MapMethod)
    .option('--points', 'with --json: include every point {id, name, x, y, label, cluster}')
    .option(
      '--json',
      'print {schemaVersion, method, total, sample, k, silhouette: [{k, score}], computedAt, clusters: [{cluster, images, topLabel, topLabelShare}], purity, points?}',
    )
    .action(async (opts: { sample: number; k: 'auto' | number; method: MapMethod; points?: boolean; json?: boolean }, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const { CollectionMap, RecentQueryVectors, summariseClusters } = await import('../../shared/services/collection-map.js');
        const collectionMap = new CollectionMap(
          { index: () => runtime.live.get(), queries: new RecentQueryVectors(1), logger: runtime.logger },
          { umap: opts.method === 'umap' },
        );
        try {
          let result = await collectionMap.map({ sample: opts.sample, k: opts.k, method: opts.method });
          while (result.status === 'computing') {
            const waitMs = Math.min(2, result.retryAfterSeconds) * 1000;
            await new Promise((r) => setTimeout(r, waitMs));
            result = await collectionMap.map({ sample: opts.sample, k: opts.k, method: opts.method });
          }
          const { points, ...map } = result.map;
          const summary = summariseClusters(points);
          if (opts.json) return await printOutput('map', { ...map, ...summary, ...(opts.points ? { points } : {}) });
          const out: string[] = [
            `${map.sample} of ${map.total} images, ${map.method.toUpperCase()} view, k = ${map.k}${opts.k === 'auto' ? ' (best silhouette)' : ''}`,
            'silhouette by k:',
            ...map.silhouette.map((s) => `  k=${String(s.k).padEnd(3)} ${s.score.toFixed(3)}${s.k === map.k ? '  <-' : ''}`),
            'clusters (images, most common label):',
            ...summary.clusters.map(
              (c) =>
                `  ${String(c.cluster).padStart(2)}: ${String(c.images).padStart(6)}  ${c.topLabel ?? '(no label)'} ${Math.round(c.topLabelShare * 100)} %`,
            ),
          ];
          if (summary.purity !== null) out.push(`label purity of the clusters: ${(summary.purity * 100).toFixed(1)} %`);
          process.stdout.write(`${out.join('\n')}\n`);
        } finally {
          await collectionMap.close();
        }
      });
    });
}
