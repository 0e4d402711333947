import { Writable } from 'node:stream';
import { beforeAll, describe, expect, test } from 'vitest';
import { parseStackConfig } from '../../infra/config.js';
import { buildStack, ofType, TEST_PROJECT, type RecordedResource } from '../../infra/testing/mocks.js';
import type { MonitorEvent } from '../../shared/services/monitoring.js';
import { searchEvent } from '../../shared/services/monitoring.js';
import { cloudSearchEvents } from '../../shared/wiring/cloud.js';

/**
 * Prediction monitoring in the Pulumi program: log-based metrics, alerts with the stack's
 * thresholds, dashboard tiles — and the proof that the metrics count the entries the cloud adapter
 * really writes.
 *
 * How a line becomes a LogEntry (https://cloud.google.com/logging/docs/structured-logging, "Special
 * JSON fields in messages"): a JSON object written on one line to stdout of a Cloud Run service is
 * stored as `jsonPayload`, minus the special fields the agent lifts into the LogEntry (severity,
 * httpRequest, time/timestamp, `logging.googleapis.com/*`); `resource.type` is
 * `cloud_run_revision`. Filters are read with the subset of the Logging query language the stack
 * uses: terms `path = value` joined by AND, where a quoted value is compared as text and `true`,
 * `false` and numbers with their JSON text (https://cloud.google.com/logging/docs/view/logging-query-language,
 * "Comparisons"); any other syntax fails the test, so a filter outside the subset must extend
 * this reader first. Extractors are `EXTRACT(path)`.
 */

const SPECIAL = new Set(['severity', 'httpRequest', 'time', 'timestamp', 'timestampSeconds', 'timestampNanos']);

interface LogEntry {
  resource: { type: string; labels: Record<string, string> };
  severity: string;
  jsonPayload: Record<string, unknown>;
}

/** What Cloud Run stores for one stdout line of `service`. */
function ingest(line: string, service: string): LogEntry {
  const json = JSON.parse(line) as Record<string, unknown>;
  const jsonPayload = Object.fromEntries(Object.entries(json).filter(([k]) => !SPECIAL.has(k) && !k.startsWith('logging.googleapis.com/')));
  return { resource: { type: 'cloud_run_revision', labels: { service_name: service } }, severity: String(json.severity ?? 'DEFAULT'), jsonPayload };
}

function fieldOf(entry: LogEntry, path: string): unknown {
  let v: unknown = entry;
  for (const key of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  return v;
}

function matches(filter: string, entry: LogEntry): boolean {
  return filter.split(/\s+AND\s+/).every((term) => {
    const m = /^([A-Za-z_][\w.]*)\s*=\s*("(?:[^"\\]|\\.)*"|true|false|-?\d+(?:\.\d+)?)$/.exec(term.trim());
    if (!m) throw new Error(`filter term outside the subset this test reads: ${term}`);
    const value = fieldOf(entry, m[1]!);
    if (value === undefined || value === null || typeof value === 'object') return false;
    const wanted = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
    return String(value) === wanted;
  });
}

function extract(extractor: string, entry: LogEntry): unknown {
  const m = /^EXTRACT\(([\w.]+)\)$/.exec(extractor);
  if (!m) throw new Error(`extractor outside the subset this test reads: ${extractor}`);
  return fieldOf(entry, m[1]!);
}

/** The adapter's real output for these events, one line each. */
async function adapterLines(events: MonitorEvent[]): Promise<string[]> {
  let text = '';
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  const sink = cloudSearchEvents('search', destination);
  for (const e of events) sink.append(e);
  await sink.flush();
  return text.trim().split('\n');
}

const at = new Date('2026-11-27T12:00:00.000Z');
const base = { at, modelVersion: 'm1', indexVersion: 'images-v1', latencyMs: { embed: 4, index: 1, total: 6 } };
const EVENTS: MonitorEvent[] = [
  searchEvent({ ...base, queryId: 'q1', kind: 'image', k: 3, scores: [0.9, 0.8, 0.7], latencyMs: { embed: 30, index: 5, total: 41.5 } }),
  searchEvent({ ...base, queryId: 'q2', kind: 'text', k: 5, scores: [], latencyMs: { embed: 9, index: 2, total: 12 } }),
  searchEvent({ ...base, queryId: 'q3', kind: 'similar', k: 5, scores: [0.6], latencyMs: { embed: 1, index: 3, total: 4.25 } }),
  { monitor: 'feedback', v: 1, at: at.toISOString(), queryId: 'q1', kind: 'image', action: 'open' },
  { monitor: 'freshness', v: 1, at: at.toISOString(), id: 'doc1', modelVersion: 'm1', lagMs: 65_000 },
];

describe('prediction monitoring in the stack', () => {
  let all: RecordedResource[];
  let entries: LogEntry[];
  const metric = (name: string) => ofType(all, 'gcp:logging/metric:Metric').find((m) => m.inputs.name === name)!;

  beforeAll(async () => {
    all = await buildStack({ monitoring: { latencyP95Ms: 750, zeroResultRate: 0.1, freshnessLagP95Seconds: 120 } });
    entries = (await adapterLines(EVENTS)).map((line) => ingest(line, 'iss-search'));
  });

  test('the cloud adapter writes one Cloud Logging entry per event, at INFO, with the event under jsonPayload', () => {
    expect(entries).toHaveLength(EVENTS.length);
    for (const [i, e] of entries.entries()) {
      expect(e.severity).toBe('INFO');
      expect(e.jsonPayload).toMatchObject(EVENTS[i]!);
    }
  });

  test('each counter metric counts exactly the entries it is named for, labelled by query kind', () => {
    const counted = (name: string) => entries.filter((e) => matches(metric(name).inputs.filter, e));
    expect(counted('iss-searches').map((e) => e.jsonPayload.queryId)).toEqual(['q1', 'q2', 'q3']);
    expect(counted('iss-zero-result-searches').map((e) => e.jsonPayload.queryId)).toEqual(['q2']);
    expect(counted('iss-search-clicks').map((e) => e.jsonPayload.queryId)).toEqual(['q1']);
    for (const name of ['iss-searches', 'iss-zero-result-searches', 'iss-search-clicks']) {
      const m = metric(name);
      expect(m.inputs.metricDescriptor).toMatchObject({ metricKind: 'DELTA', valueType: 'INT64', labels: [{ key: 'kind', valueType: 'STRING' }] });
      expect(counted(name).map((e) => extract(m.inputs.labelExtractors.kind, e))).toEqual(counted(name).map((e) => e.jsonPayload.kind));
    }
    expect(counted('iss-searches').map((e) => extract(metric('iss-searches').inputs.labelExtractors.kind, e))).toEqual(['image', 'text', 'similar']);
  });

  test("the latency and freshness distributions extract the events' numbers", () => {
    const latency = metric('iss-search-latency');
    expect(latency.inputs.metricDescriptor).toMatchObject({ metricKind: 'DELTA', valueType: 'DISTRIBUTION', unit: 'ms' });
    expect(entries.filter((e) => matches(latency.inputs.filter, e)).map((e) => extract(latency.inputs.valueExtractor, e))).toEqual([41.5, 12, 4.25]);
    const freshness = metric('iss-freshness-lag');
    expect(freshness.inputs.metricDescriptor).toMatchObject({ metricKind: 'DELTA', valueType: 'DISTRIBUTION', unit: 'ms' });
    // Freshness events come from upsertVectors, whose gen2 function runs as the Cloud Run service iss-upsert-vectors.
    const fromUpsert = entries.map((e) => ({ ...e, resource: { ...e.resource, labels: { service_name: 'iss-upsert-vectors' } } }));
    expect(fromUpsert.filter((e) => matches(freshness.inputs.filter, e)).map((e) => extract(freshness.inputs.valueExtractor, e))).toEqual([65_000]);
    for (const m of [latency, freshness])
      expect(m.inputs.bucketOptions.exponentialBuckets).toMatchObject({ numFiniteBuckets: 40, growthFactor: 1.5, scale: 1 });
  });

  test('each metric counts its own service only: the same line from any other Cloud Run service or function is not counted (security review, finding 11)', () => {
    // Gen2 functions log as Cloud Run services (resource.type "cloud_run_revision", resource.labels.service_name
    // = the function's service, https://cloud.google.com/run/docs/logging): the stack's names are these.
    expect(ofType(all, 'gcp:cloudrunv2/service:Service').map((r) => r.inputs.name)).toContain('iss-search');
    const upsert = ofType(all, 'gcp:cloudfunctionsv2/function:Function').find((f) => f.inputs.buildConfig.entryPoint === 'upsertVectors')!;
    expect(upsert.outputs.serviceConfig.service).toMatch(/\/services\/iss-upsert-vectors$/);
    const lines = entries.map((e) => ({ ...e, jsonPayload: { ...e.jsonPayload } }));
    const as = (service: string) => lines.map((e) => ({ ...e, resource: { type: 'cloud_run_revision', labels: { service_name: service } } }));
    const count = (name: string, from: LogEntry[]) => from.filter((e) => matches(metric(name).inputs.filter, e)).length;
    for (const name of ['iss-searches', 'iss-zero-result-searches', 'iss-search-clicks', 'iss-search-latency']) {
      expect(count(name, as('iss-search')), name).toBeGreaterThan(0);
      for (const other of ['iss-upsert-vectors', 'iss-on-object-event', 'iss-drift-start', 'someone-elses-service'])
        expect(count(name, as(other)), `${name} from ${other}`).toBe(0);
    }
    expect(count('iss-freshness-lag', as('iss-upsert-vectors'))).toBe(1);
    for (const other of ['iss-search', 'iss-on-object-event', 'someone-elses-service']) expect(count('iss-freshness-lag', as(other)), other).toBe(0);
    // Not a Cloud Run revision (e.g. a Cloud Run job writing the same line): not counted either.
    expect(
      count(
        'iss-searches',
        lines.map((e) => ({ ...e, resource: { type: 'cloud_run_job', labels: { service_name: 'iss-search' } } })),
      ),
    ).toBe(0);
  });

  test("renaming an event field breaks the match (the filters read the adapter's field names)", () => {
    const renamed = { ...entries[1]!, jsonPayload: { ...entries[1]!.jsonPayload, zeroResults: true, zeroResult: undefined } };
    expect(matches(metric('iss-zero-result-searches').inputs.filter, renamed)).toBe(false);
    const noLatency = { ...entries[0]!, jsonPayload: { ...entries[0]!.jsonPayload, latencyMs: undefined, latency: { total: 41.5 } } };
    expect(extract(metric('iss-search-latency').inputs.valueExtractor, noLatency)).toBeUndefined();
  });

  test("alerts on latency p95, zero-result rate and freshness lag p95 use the stack's thresholds", () => {
    const alerts = ofType(all, 'gcp:monitoring/alertPolicy:AlertPolicy');
    const byName = (suffix: string) => alerts.find((a) => a.name === `monitoring-${suffix}`)!.inputs.conditions[0].conditionThreshold;
    const latency = byName('search-latency');
    expect(latency).toMatchObject({ comparison: 'COMPARISON_GT', thresholdValue: 750, duration: '300s' });
    expect(latency.filter).toBe('metric.type = "logging.googleapis.com/user/iss-search-latency" AND resource.type = "cloud_run_revision"');
    expect(latency.aggregations).toEqual([
      { alignmentPeriod: '300s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_PERCENTILE_95', groupByFields: ['metric.label.kind'] },
    ]);
    const zero = byName('zero-result-rate');
    expect(zero).toMatchObject({ comparison: 'COMPARISON_GT', thresholdValue: 0.1 });
    expect(zero.filter).toContain('logging.googleapis.com/user/iss-zero-result-searches');
    expect(zero.denominatorFilter).toContain('logging.googleapis.com/user/iss-searches');
    expect(zero.aggregations).toEqual(zero.denominatorAggregations);
    const fresh = byName('freshness-lag');
    expect(fresh).toMatchObject({ comparison: 'COMPARISON_GT', thresholdValue: 120_000 });
    expect(fresh.filter).toContain('logging.googleapis.com/user/iss-freshness-lag');
    // Created only once Cloud Monitoring knows the metrics (a new log-based metric is 404 for minutes).
    for (const suffix of ['search-latency', 'zero-result-rate', 'freshness-lag']) {
      expect(alerts.find((a) => a.name === `monitoring-${suffix}`)!.dependsOn).toContain('monitoring-prediction-metrics-known');
    }
  });

  test('the dashboard charts searches, latency, zero-result rate, click-through and freshness from those metrics', () => {
    const [dashboard] = ofType(all, 'gcp:monitoring/dashboard:Dashboard');
    const widgets = JSON.parse(dashboard!.inputs.dashboardJson).gridLayout.widgets as { title: string }[];
    const text = JSON.stringify(widgets);
    expect(widgets.map((w) => w.title)).toEqual(
      expect.arrayContaining([
        'Searches by kind (per minute)',
        'Search latency p50 / p95 (ms)',
        'Zero-result rate',
        'Click-through (clicks / searches)',
        'Freshness lag p50 / p95 (ms, upload → searchable)',
      ]),
    );
    for (const name of ['iss-searches', 'iss-search-latency', 'iss-zero-result-searches', 'iss-search-clicks', 'iss-freshness-lag'])
      expect(text).toContain(`logging.googleapis.com/user/${name}`);
  });

  test('thresholds default when unset, and bad ones are refused naming the setting', () => {
    expect(parseStackConfig({ project: TEST_PROJECT, opensearchUrl: undefined }).monitoring).toEqual({
      latencyP95Ms: 2000,
      zeroResultRate: 0.2,
      freshnessLagP95Seconds: 900,
    });
    expect(() => parseStackConfig({ project: TEST_PROJECT, monitoring: { zeroResultRate: 2 } })).toThrow(/iss:monitoring\.zeroResultRate/);
    expect(() => parseStackConfig({ project: TEST_PROJECT, monitoring: { latencyP95Ms: -1 } })).toThrow(/iss:monitoring\.latencyP95Ms/);
    expect(() => parseStackConfig({ project: TEST_PROJECT, monitoring: { latency: 5 } })).toThrow(/iss:monitoring/);
  });
});
