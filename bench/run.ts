import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { fashionMnistPng, readFashionMnist } from '../shared/datasets/fashion-mnist.js';
import { formatCliStart, measureCliStart } from './cli-start.js';
import { measureCloudIndexing } from './cloud-indexing.js';
import { formatColdStart, measureColdStart } from './cold-start.js';
import { measureFreshness } from './freshness.js';
import { measureLoad } from './load.js';
import { formatMonitoringOverhead, measureMonitoringOverhead } from './monitoring-overhead.js';
import { formatPageMap, measurePageMap } from './page-map.js';
import { measureRestart } from './restart.js';
import { measureThroughput, type ThroughputResult } from './pipeline-throughput.js';
import { benchSearchIndex, formatSearchIndex } from './search-index.js';
import { ANN_TYPES } from '../shared/ports/vector-index.js';

/**
 * `npm run bench`: every figure is printed beside a baseline measured in the same process.
 * Sections can be picked: `npm run bench -- --only throughput,freshness,search`; `cold-start`
 * (function cold start and installed size, tsx vs bundles) runs only when named.
 */
const PHOTO_DIR = '/usr/share/backgrounds/mate/nature';
const opts = new Command('bench')
  .option(
    '--only <sections>',
    'comma-separated: throughput,freshness,search,cold-start,cli-start,load,restart,cloud-indexing,page-map,map,monitoring,int8,compact,tower-step',
    'throughput,freshness,search',
  )
  .option('--fashion <n>', 'Fashion-MNIST images for throughput', '1000')
  .option('--batch <n>', 'batch size', '32')
  .option('--vectors <n>', 'vectors for the search section', '100000')
  .option('--dim <n>', 'vector dimension for the search section (the default model: 1632)', '1632')
  .option('--ann-types <list>', 'search section: ANN types compared (ivf_hnsw_sq, ivf_pq; IVF-PQ builds for about an hour at 100k)', 'ivf_pq,ivf_hnsw_sq')
  .option('--runs <n>', 'processes per variant for cold-start (median)', '5')
  .option('--out <file>', 'write the figures as JSON')
  .option('--images <n>', 'indexed images for the load section', '10000')
  .option('--load-seconds <n>', 'seconds per concurrency level in the load section', '20')
  .option('--burst <n>', "images landing at each level of the load section's ingest burst", '1000')
  .option('--load-home <dir>', "keep the load section's bucket and data directory here, to reuse its ingest next time")
  .option('--restart-files <n>', 'files in the folder `up` is restarted over (restart section)', '60000')
  .option('--restart-queries <n>', '"more like this" requests after the restart', '300')
  .option('--restart-no-ann', 'restart section: do not build the ANN index before restarting')
  .option('--ci-documents <n>', 'cloud-indexing section: documents in the backfill', '10000')
  .option('--ci-latency <ms>', 'cloud-indexing section: service time of each OpenSearch request', '20')
  .option('--ci-dim <n>', 'cloud-indexing section: vector dimension (the compact vectors of issue 15 item 2: 128–256)', '256')
  .option('--map-sizes <list>', 'map section: comma-separated sample sizes', '10000,60000')
  .option('--map-umap-max <n>', 'map section: largest size UMAP is timed at (the API samples at most 20000)', '20000')
  .option('--parity-images <n>', 'int8 and compact sections: Fashion-MNIST test images, each queried against the others', '3000')
  .option('--unlock <n>', 'tower-step section: unlocked units (1–4)', '2')
  .parse(process.argv)
  .opts<{
    only: string;
    fashion: string;
    batch: string;
    vectors: string;
    dim: string;
    runs: string;
    out?: string;
    images: string;
    loadSeconds: string;
    burst: string;
    loadHome?: string;
    restartFiles: string;
    restartQueries: string;
    restartNoAnn?: boolean;
    ciDocuments: string;
    ciLatency: string;
    ciDim: string;
    mapSizes: string;
    mapUmapMax: string;
    parityImages: string;
    annTypes: string;
    unlock: string;
  }>();
const sections = new Set(opts.only.split(','));
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-bench-'));
const report: Record<string, unknown> = { date: new Date().toISOString(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model };
const line = (s: string) => process.stdout.write(`${s}\n`);

function printThroughput(r: ThroughputResult) {
  line(`  ${r.label}: ${r.images} images, batch ${r.batchSize}`);
  line(`    (a) bare ONNX inference on decoded tensors: ${r.bareImagesPerSecond.toFixed(1)} images/s`);
  line(`    (b) full pipeline, files → indexed vectors: ${r.pipelineImagesPerSecond.toFixed(1)} images/s`);
  line(`    ratio (b)/(a): ${(r.ratio * 100).toFixed(1)}%`);
  line(`    CPU per image (all threads): (a) ${r.bareCpuMsPerImage.toFixed(1)} ms, (b) ${r.pipelineCpuMsPerImage.toFixed(1)} ms`);
  const groups = (by: Partial<Record<string, number>>) =>
    Object.entries(by)
      .map(([g, ms]) => `${g} ${(ms ?? 0).toFixed(1)}`)
      .join(', ');
  line(
    `    (c) unavoidable work (read + decode/resize + inference, tight loop): ${r.unavoidableImagesPerSecond.toFixed(1)} images/s, CPU ${r.unavoidableCpuMsPerImage.toFixed(1)} ms per image`,
  );
  line(`    pipeline CPU per image ÷ unavoidable: ${r.overhead.toFixed(2)}× (target ≤ 1.25×)`);
  if (Object.keys(r.pipelineCpuByThread).length > 0) {
    line(`    (b) by thread, ms per image: ${groups(r.pipelineCpuByThread)}`);
    line(`    (c) by thread, ms per image: ${groups(r.unavoidableCpuByThread)}`);
  }
}

try {
  if (sections.has('throughput')) {
    line('## Throughput (same model, same batch size, same process)');
    const fashionDir = path.join(work, 'fashion');
    await fs.mkdir(fashionDir);
    const { images } = await readFashionMnist({ split: 'test', limit: Number(opts.fashion) });
    for (const [i, im] of images.entries()) await fs.writeFile(path.join(fashionDir, `f-${i}.png`), await fashionMnistPng(im));
    const fashion = await measureThroughput('fashion-mnist', fashionDir, work, Number(opts.batch));
    printThroughput(fashion);
    const photoDir = path.join(work, 'photos');
    await fs.mkdir(photoDir);
    const photos = (await fs.readdir(PHOTO_DIR)).filter((f) => f.endsWith('.jpg'));
    // 8 copies (96 images, 3 batches): with fewer, the pipeline's fixed costs weigh on each image.
    for (let copy = 0; copy < 8; copy++) {
      for (const p of photos)
        await fs.writeFile(
          path.join(photoDir, `${copy}-${p}`),
          await sharp(path.join(PHOTO_DIR, p))
            .jpeg({ quality: 92 - copy })
            .toBuffer(),
        );
    }
    const photo = await measureThroughput('photos 1.3–4.9 MP', photoDir, work, Number(opts.batch));
    printThroughput(photo);
    report.throughput = [fashion, photo];
  }
  if (sections.has('freshness')) {
    line('## Freshness under `imgsearch up` (file lands → searchable)');
    const { images } = await readFashionMnist({ split: 'test', limit: 30, offset: 2000 });
    const srcDir = path.join(work, 'fresh-src');
    await fs.mkdir(srcDir);
    const files = [];
    for (const [i, im] of images.entries()) {
      const f = path.join(srcDir, `s-${i}.png`);
      await fs.writeFile(f, await fashionMnistPng(im));
      files.push(f);
    }
    const fresh = await measureFreshness(files, work);
    line(`  ${fresh.files} files one at a time: p50 ${fresh.p50Ms.toFixed(0)} ms, p95 ${fresh.p95Ms.toFixed(0)} ms, max ${fresh.maxMs.toFixed(0)} ms`);
    report.freshness = fresh;
  }
  if (sections.has('search') || sections.has('search-index')) {
    line(`## Embedded index (LanceDB) at ${opts.vectors} vectors: flat scan vs IVF-PQ vs IVF_HNSW_SQ`);
    const types = opts.annTypes.split(',').map((t) => {
      const type = ANN_TYPES.find((a) => a === t.trim());
      if (!type) throw new Error(`--ann-types: ${t} is not one of ${ANN_TYPES.join(', ')}`);
      return type;
    });
    const r = await benchSearchIndex(work, Number(opts.vectors), Number(opts.dim), 100, types);
    for (const l of formatSearchIndex(r)) line(l);
    report.search = r;
  }
  if (sections.has('cold-start')) {
    line('## Cold start and installed size of the deployables (TypeScript through tsx vs esbuild bundles)');
    const r = await measureColdStart({ runs: Number(opts.runs) });
    for (const l of formatColdStart(r)) line(l);
    report.coldStart = r;
  }
  if (sections.has('map')) {
    line(`## Collection map computation (${opts.dim}-dimensional clustered unit vectors; baseline: one exact scan of the same vectors, same run)`);
    const { benchMap, formatMapLoad } = await import('./map.js');
    const r = await benchMap({ sizes: opts.mapSizes.split(',').map(Number), dim: Number(opts.dim), umapMax: Number(opts.mapUmapMax), log: line });
    line(formatMapLoad(r));
    report.map = r;
  }
  if (sections.has('page-map')) {
    line('## The collection map in the browser: 10,000 points drawn by the page (baseline: 1,000 points, same run)');
    const r = await measurePageMap({ points: 10_000, baselinePoints: 1_000, runs: 3 });
    for (const l of formatPageMap(r)) line(l);
    report.pageMap = r;
  }
  if (sections.has('cli-start')) {
    line('## CLI start: CPU and wall time of a fresh imgsearch process (baseline: node -e 0)');
    const r = measureCliStart({ runs: Number(opts.runs) });
    for (const l of formatCliStart(r)) line(l);
    report.cliStart = r;
  }
  if (sections.has('load')) {
    line(`## Load on \`imgsearch up\` (${opts.images} images): searches by image from 1/8/32 clients, idle and during an ingest burst`);
    report.load = await measureLoad(
      { images: Number(opts.images), work, seconds: Number(opts.loadSeconds), burst: Number(opts.burst), home: opts.loadHome },
      line,
    );
  }
  if (sections.has('restart')) {
    line(`## Restarting \`imgsearch up\` over an indexed folder of ${opts.restartFiles} files (this release vs the previous release's reconcile)`);
    report.restart = await measureRestart(
      { files: Number(opts.restartFiles), work, buildAnn: opts.restartNoAnn !== true, queries: Number(opts.restartQueries) },
      line,
    );
  }
  if (sections.has('cloud-indexing')) {
    line(`## Cloud indexing: a backfill of ${opts.ciDocuments} embedding messages pushed to upsertVectors (OpenSearch fake, ${opts.ciLatency} ms per request)`);
    report.cloudIndexing = await measureCloudIndexing(
      { documents: Number(opts.ciDocuments), dimension: Number(opts.ciDim), latencyMs: Number(opts.ciLatency), inFlight: 100, processors: 4 },
      line,
    );
  }
  if (sections.has('monitoring')) {
    line('## Prediction monitoring: text searches with the local event log vs without (same index, same run)');
    const r = await measureMonitoringOverhead(work);
    for (const l of formatMonitoringOverhead(r)) line(l);
    report.monitoring = r;
  }
  if (sections.has('int8')) {
    line('## int8 vs float32 image tower (same process, batch, threads and session options)');
    const { benchInt8, formatInt8 } = await import('./int8.js');
    const r = await benchInt8(work, { fashion: Number(opts.parityImages), batch: Number(opts.batch), threads: 2 });
    for (const l of formatInt8(r)) line(l);
    report.int8 = r;
  }
  if (sections.has('compact')) {
    line('## Compact vectors (PCA of the collection) vs the full base embedding');
    const { benchCompact, formatCompact } = await import('./compact.js');
    const r = await benchCompact(work, { fashion: Number(opts.parityImages), threads: 2 });
    for (const l of formatCompact(r)) line(l);
    report.compact = r;
  }
  if (sections.has('tower-step')) {
    line('## Unlocked tower blocks: one training step, hand-written gradients vs tfjs-core autodiff (same process)');
    const { benchTowerStep, formatTowerStep } = await import('./tower-step.js');
    const r = await benchTowerStep({ unlock: Number(opts.unlock) });
    for (const l of formatTowerStep(r)) line(l);
    report.towerStep = r;
  }
  if (opts.out) await fs.writeFile(opts.out, `${JSON.stringify(report, null, 2)}\n`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
