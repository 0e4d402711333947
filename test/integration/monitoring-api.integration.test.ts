import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalProduct, type LocalProduct } from '../../cli/commands/up.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { silentLogger } from '../../shared/logger.js';
import { monitorOutputSchema, searchOutputSchema, type SearchOutput } from '../../shared/output-schemas.js';
import { activateModel } from '../../shared/services/model-lifecycle.js';
import { monitorEventSchema, type FreshnessMonitorEvent } from '../../shared/services/monitoring.js';
import { retrain } from '../../shared/services/retrain.js';
import { lifecycleDeps, openLocalRuntime, type LocalRuntime } from '../../shared/wiring/local.js';
import { runCli, tempDir } from '../helpers/cli.js';

/**
 * Acceptance of prediction monitoring (issue 16, item 1): searches of each kind and clicks go
 * through the real HTTP API of the local product (the `up` app over a real model, LanceDB and
 * folder), one more search through the CLI, and `imgsearch monitor --json` (the CLI, another
 * process reading the event log) shows exactly those counts, the zero-result searches, ordered
 * latency figures, click-through = clicks / searches, and one freshness figure per image indexed.
 * A model with a text tower comes from a short retraining on the images' labels, activated the way
 * `model promote` does.
 */
const N = 40;
const PER_KIND = 3;

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('prediction monitoring through the API and `imgsearch monitor`', () => {
  let work: string;
  let home: string;
  let runtime: LocalRuntime;
  let product: LocalProduct;
  let images: Buffer[];
  let classNames: string[];
  const answers: SearchOutput[] = [];
  let freshness: FreshnessMonitorEvent[] = [];
  let started: number;

  const get = async (query: string): Promise<SearchOutput> => {
    const res = await fetch(`${product.url}/api/search?${query}`);
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    const out = searchOutputSchema.parse(body);
    answers.push(out);
    return out;
  };
  const post = async (image: Buffer): Promise<SearchOutput> => {
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'query.png');
    const res = await fetch(`${product.url}/api/search?k=5`, { method: 'POST', body: form });
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    const out = searchOutputSchema.parse(body);
    answers.push(out);
    return out;
  };
  const click = async (answer: SearchOutput): Promise<number> => {
    const res = await fetch(`${product.url}/api/feedback`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: answer.feedbackToken, resultId: answer.results[0]!.id, action: 'open' }),
    });
    return res.status;
  };
  const cli = (...args: string[]) => runCli(args, { cwd: work, env: { IMGSEARCH_HOME: home } });

  beforeAll(async () => {
    work = await tempDir('monitoring');
    home = path.join(work, 'home');
    const bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    started = Date.now();
    const fm = await readFashionMnist({ split: 'test', limit: N });
    classNames = fm.classNames;
    images = await Promise.all(fm.images.map((im) => fashionMnistPng(im)));
    for (let i = 0; i < N; i++) {
      await fs.writeFile(path.join(bucket, `item-${i}.png`), images[i]!);
      await fs.writeFile(path.join(bucket, `item-${i}.json`), JSON.stringify({ labels: [classNames[fm.labels[i]!]] }));
    }
    const config = configFromEnv(parseEnv({ IMGSEARCH_HOME: home, IMGSEARCH_BUCKET_DIR: bucket, IMGSEARCH_PORT: '0', LOG_LEVEL: 'silent' }), work);
    runtime = await openLocalRuntime(config, { logger: silentLogger });
    product = await startLocalProduct(runtime);
    await waitFor(async () => ((await (await runtime.liveIndex()).count()) === N ? true : undefined), 90_000);

    // A text tower: a short retraining on the labels, registered, then activated as `model promote` does.
    const result = await retrain(
      { features: runtime.features, registry: runtime.registry, logger: silentLogger },
      { epochs: 3, seed: 7, training: { hidden: 32 } },
    );
    await activateModel(lifecycleDeps(runtime), result.candidate.version);
    await runtime.model.refresh();
    await waitFor(async () => {
      const res = await fetch(`${product.url}/api/search?q=${encodeURIComponent(classNames[1]!)}&k=1`);
      return res.status === 200 ? true : undefined;
    }, 30_000);
    answers.length = 0;
    await runtime.events.flush();
    const written = (await fs.readFile(path.join(config.paths.monitoring, 'events.jsonl'), 'utf8')).trim().split('\n');
    freshness = written.map((l) => monitorEventSchema.parse(JSON.parse(l))).flatMap((e) => (e.monitor === 'freshness' ? [e] : []));
    // The probe search is an event too: the counts below start from an empty log.
    await fs.rm(config.paths.monitoring, { recursive: true, force: true });
  }, 180_000);

  afterAll(async () => {
    await product?.stop();
    await runtime?.close();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('counts exactly the searches, zero-result searches and clicks made, with ordered latencies and click-through = clicks / searches', async () => {
    // PER_KIND searches of each kind, plus one zero-result text and one zero-result similar search.
    const byImage: SearchOutput[] = [];
    for (let i = 0; i < PER_KIND; i++) byImage.push(await post(images[i]!));
    for (let i = 0; i < PER_KIND; i++) await get(`similarTo=${encodeURIComponent(byImage[i]!.results[0]!.id)}&k=5`);
    for (let i = 0; i < PER_KIND; i++) await get(`q=${encodeURIComponent(classNames[i]!)}&k=5`);
    // A cosine of 1 between a text and an image never happens; a label nobody carries filters everything out.
    const zeroText = await get(`q=${encodeURIComponent(classNames[0]!)}&k=5&minScore=1`);
    const zeroSimilar = await get(`similarTo=${encodeURIComponent(byImage[0]!.results[0]!.id)}&k=5&label=no-such-label`);
    expect(zeroText.results).toEqual([]);
    expect(zeroSimilar.results).toEqual([]);

    // Two clicks on two answers; a repeated click is recorded once.
    expect(await click(answers[0]!)).toBe(204);
    expect(await click(answers[PER_KIND * 2]!)).toBe(204);
    expect(await click(answers[0]!)).toBe(204);

    // One search from the CLI (another process, same data directory).
    const viaCli = await cli('search', '--similar', byImage[1]!.results[0]!.id, '-k', '4', '--json');
    expect(viaCli.code, viaCli.stderr).toBe(0);

    await product.stop();
    await runtime.close(); // flushes the app's queued events

    const run = await cli('monitor', '--since', '2h', '--by', 'hour', '--json');
    expect(run.code, run.stderr).toBe(0);
    const out = monitorOutputSchema.parse(JSON.parse(run.stdout));
    const searches = PER_KIND * 3 + 2 + 1;
    expect(out.totals).toMatchObject({
      searches,
      byKind: { image: PER_KIND, similar: PER_KIND + 2, text: PER_KIND + 1 },
      zeroResults: 2,
      zeroResultRate: 2 / searches,
      clicks: 2,
      clickedSearches: 2,
      clickThroughRate: 2 / searches,
      // Every answer came from the retrained model (the one with the text tower).
      modelVersions: { [answers[0]!.modelVersion]: searches },
    });
    expect(out.unmatchedClicks).toBe(0);
    for (const key of ['total', 'embed', 'index'] as const) {
      const s = out.totals.latencyMs[key]!;
      expect(s, key).not.toBeNull();
      expect(s.p50).toBeLessThanOrEqual(s.p95);
      expect(s.p95).toBeLessThanOrEqual(s.max);
    }
    expect(out.totals.latencyMs.total!.p50).toBeGreaterThan(0);
    expect(out.buckets.reduce((n, b) => n + b.searches, 0)).toBe(searches);
    expect(out.buckets.length).toBeGreaterThanOrEqual(2);

    // The events themselves: one per answer, joined to its answer by query id.
    const lines = (await fs.readFile(path.join(home, 'monitoring', 'events.jsonl'), 'utf8')).trim().split('\n');
    const events = lines.map((l) => monitorEventSchema.parse(JSON.parse(l)));
    const searchEvents = events.filter((e) => e.monitor === 'search');
    expect(searchEvents).toHaveLength(searches);
    const ids = new Set(searchEvents.map((e) => e.queryId));
    for (const a of answers) expect(ids.has(a.queryId!)).toBe(true);
    const zero = searchEvents.filter((e) => e.zeroResult).map((e) => e.queryId);
    expect(zero.sort()).toEqual([zeroText.queryId!, zeroSimilar.queryId!].sort());
    const clicks = events.filter((e) => e.monitor === 'feedback').map((e) => e.queryId);
    expect(clicks).toEqual([answers[0]!.queryId, answers[PER_KIND * 2]!.queryId]);
    for (const e of searchEvents) expect(e.kthScore === null || e.kthScore <= e.topScore!).toBe(true);
  }, 120_000);

  it('one freshness event per image indexed, its lag from the file written to the vector upserted', () => {
    expect(freshness.map((e) => e.id).sort()).toEqual([...new Set(freshness.map((e) => e.id))].sort());
    expect(freshness).toHaveLength(N);
    for (const e of freshness) {
      // Files written after `started`, indexed before the ingest wait ended: the lag is within that span.
      expect(e.lagMs).toBeGreaterThanOrEqual(0);
      expect(e.lagMs).toBeLessThanOrEqual(Date.parse(e.at) - started);
    }
  });

  it('`monitor` refuses a bad window or unit with exit 2, naming the flag', async () => {
    const since = await cli('monitor', '--since', '24');
    expect(since.code).toBe(2);
    expect(since.stderr).toMatch(/--since: expected a duration such as 90m, 24h or 7d/);
    const by = await cli('monitor', '--by', 'week');
    expect(by.code).toBe(2);
    expect(by.stderr).toMatch(/--by: expected hour or day/);
    const rows = await cli('monitor', '--since', '60d', '--by', 'hour');
    expect(rows.code).toBe(2);
    expect(rows.stderr).toMatch(/too many rows.*by day/);
  }, 60_000);
});
