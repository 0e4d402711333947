import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { Placement } from '../placement.js';
import { propagationWait } from './service-agents.js';

export interface MonitoringArgs extends Placement {
  /** Where alerts are emailed; no channel when unset (alerts still show in the console). */
  alertEmail?: string;
  /** Dead-letter inbox subscriptions (subscription ids). */
  deadLetterInboxes: pulumi.Input<string>[];
  /** Cloud Run jobs whose failed executions alert (embed, reindex). */
  jobs: pulumi.Input<string>[];
  /** Cloud Run services of the functions (gen2) and of the search API. */
  functionServices: pulumi.Input<string>[];
  /** The service that writes the index (upsertVectors). */
  indexService: pulumi.Input<string>;
  /** The search service (Cloud Run), the only writer of search and click events. */
  searchService: pulumi.Input<string>;
  /** Main subscriptions whose backlog the dashboard shows. */
  subscriptions: pulumi.Input<string>[];
  /** Prediction-monitoring alert thresholds (`iss:monitoring.*`). */
  thresholds: PredictionThresholds;
}

export interface PredictionThresholds {
  /** 95th percentile of search latency, ms. */
  latencyP95Ms: number;
  /** Share of searches with no result, 0–1. */
  zeroResultRate: number;
  /** 95th percentile of upload → searchable, seconds. */
  freshnessLagP95Seconds: number;
}

/**
 * The prediction-monitoring events as the cloud writes them (shared/adapters/gcp/cloud-logging-search-events.ts):
 * one JSON line per event on stdout of the search service (searches, clicks) and of upsertVectors
 * (freshness), which Cloud Run turns into a LogEntry with the event's fields under `jsonPayload`
 * (https://cloud.google.com/logging/docs/structured-logging). These filters and extractors name
 * those fields; test/unit/monitoring-infra.unit.test.ts feeds the adapter's real output through them.
 */
export function predictionLogFilters(services: { search: pulumi.Input<string>; index: pulumi.Input<string> }) {
  // Only the service that writes each event: any other workload of the project (or a job, whose
  // entries are cloud_run_job) logging a line with the same fields is not counted. Gen2 functions
  // are Cloud Run services, their entries `cloud_run_revision` labelled with the service's name.
  const from = (service: pulumi.Input<string>, rest: string) =>
    pulumi.interpolate`resource.type="cloud_run_revision" AND resource.labels.service_name="${service}" AND ${rest}`;
  return {
    searches: from(services.search, 'jsonPayload.monitor="search"'),
    zeroResults: from(services.search, 'jsonPayload.monitor="search" AND jsonPayload.zeroResult=true'),
    clicks: from(services.search, 'jsonPayload.monitor="feedback"'),
    freshness: from(services.index, 'jsonPayload.monitor="freshness"'),
  };
}

const inList = (label: string, values: string[]) => `${label} = one_of(${values.map((v) => `"${v}"`).join(', ')})`;

/**
 * What an operator watches: a dashboard (backlogs, dead letters, job executions, errors) and
 * alerts on anything that means an image will not be searchable without help: a dead letter,
 * a failed embed/reindex execution, function errors, index write errors. And what search does for
 * users (prediction monitoring): log-based metrics over the search, click and freshness events,
 * their charts, and alerts on search latency, zero-result rate and freshness lag.
 */
export class Monitoring extends pulumi.ComponentResource {
  public readonly alerts: gcp.monitoring.AlertPolicy[];
  /** Alerts on what search does for users: latency, zero-result rate, freshness lag. */
  public readonly predictionAlerts: gcp.monitoring.AlertPolicy[];
  /** Log-based metrics over the prediction-monitoring events. */
  public readonly predictionMetrics: Record<'searches' | 'zeroResults' | 'clicks' | 'latency' | 'freshness', gcp.logging.Metric>;
  public readonly dashboard: gcp.monitoring.Dashboard;

  constructor(name: string, args: MonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:monitoring:Monitoring', name, {}, opts);
    const parent = { parent: this };

    const channels: pulumi.Input<string>[] = [];
    if (args.alertEmail) {
      const email = new gcp.monitoring.NotificationChannel(
        `${name}-email`,
        { project: args.project, displayName: `${args.prefix} alerts`, type: 'email', labels: { email_address: args.alertEmail } },
        parent,
      );
      channels.push(email.name);
    }

    // Log-based metrics: ERROR entries of the functions, and of the index writer alone.
    const errorMetric = (key: string, services: pulumi.Input<string>[], description: string) =>
      new gcp.logging.Metric(
        `${name}-${key}`,
        {
          project: args.project,
          name: `${args.prefix}-${key}`,
          description,
          filter: pulumi
            .all(services)
            .apply((names) => `resource.type="cloud_run_revision" AND ${inList('resource.labels.service_name', names)} AND severity>=ERROR`),
          metricDescriptor: { metricKind: 'DELTA', valueType: 'INT64', unit: '1' },
        },
        parent,
      );
    const functionErrors = errorMetric('function-errors', args.functionServices, 'ERROR log entries of the pipeline functions and search');
    const indexErrors = errorMetric('index-errors', [args.indexService], 'ERROR log entries of upsertVectors (index writes)');
    // A new log-based metric is unknown to Cloud Monitoring for a few minutes: an alert policy on
    // it created at once answers 404 and fails the first `pulumi up`.
    const metricsKnown = propagationWait(`${name}-metrics-known`, [functionErrors, indexErrors], parent);

    const alert = (key: string, displayName: string, filter: pulumi.Input<string>, aligner: string, documentation: string) =>
      new gcp.monitoring.AlertPolicy(
        `${name}-${key}`,
        {
          project: args.project,
          displayName: `${args.prefix}: ${displayName}`,
          combiner: 'OR',
          notificationChannels: channels,
          documentation: { content: documentation, mimeType: 'text/markdown' },
          alertStrategy: { autoClose: '1800s' },
          conditions: [
            {
              displayName,
              conditionThreshold: {
                filter,
                comparison: 'COMPARISON_GT',
                thresholdValue: 0,
                duration: '0s',
                aggregations: [{ alignmentPeriod: '300s', perSeriesAligner: aligner }],
              },
            },
          ],
        },
        { ...parent, dependsOn: [metricsKnown] },
      );

    // Prediction monitoring: what search does for users (services/monitoring.ts), from the events' log entries.
    const kindLabel = { labels: [{ key: 'kind', valueType: 'STRING', description: 'query kind: image, text or similar' }] };
    const kindExtractor = { kind: 'EXTRACT(jsonPayload.kind)' };
    const logMetric = (key: string, description: string, spec: Omit<gcp.logging.MetricArgs, 'project' | 'name' | 'description'>) =>
      new gcp.logging.Metric(`${name}-${key}`, { project: args.project, name: `${args.prefix}-${key}`, description, ...spec }, parent);
    // Exponential buckets 1, 1.5, 2.25 … ms up to ~ 4.4 h: fine below a second, still bounded for lags.
    const msBuckets = { exponentialBuckets: { numFiniteBuckets: 40, growthFactor: 1.5, scale: 1 } };
    const filters = predictionLogFilters({ search: args.searchService, index: args.indexService });
    const searches = logMetric('searches', 'Searches answered, by query kind', {
      filter: filters.searches,
      metricDescriptor: { metricKind: 'DELTA', valueType: 'INT64', unit: '1', ...kindLabel },
      labelExtractors: kindExtractor,
    });
    const zeroResults = logMetric('zero-result-searches', 'Searches answered with no result, by query kind', {
      filter: filters.zeroResults,
      metricDescriptor: { metricKind: 'DELTA', valueType: 'INT64', unit: '1', ...kindLabel },
      labelExtractors: kindExtractor,
    });
    const clicks = logMetric('search-clicks', 'Clicks on search results (feedback accepted), by query kind', {
      filter: filters.clicks,
      metricDescriptor: { metricKind: 'DELTA', valueType: 'INT64', unit: '1', ...kindLabel },
      labelExtractors: kindExtractor,
    });
    const latency = logMetric('search-latency', 'Search latency in the search service (ms, end to end), by query kind', {
      filter: filters.searches,
      metricDescriptor: { metricKind: 'DELTA', valueType: 'DISTRIBUTION', unit: 'ms', ...kindLabel },
      valueExtractor: 'EXTRACT(jsonPayload.latencyMs.total)',
      labelExtractors: kindExtractor,
      bucketOptions: msBuckets,
    });
    const freshness = logMetric('freshness-lag', 'Upload → searchable: object written to vector in the live index (ms)', {
      filter: filters.freshness,
      metricDescriptor: { metricKind: 'DELTA', valueType: 'DISTRIBUTION', unit: 'ms' },
      valueExtractor: 'EXTRACT(jsonPayload.lagMs)',
      bucketOptions: msBuckets,
    });
    this.predictionMetrics = { searches, zeroResults, clicks, latency, freshness };
    const predictionKnown = propagationWait(`${name}-prediction-metrics-known`, [searches, zeroResults, clicks, latency, freshness], parent);
    const userMetric = (m: gcp.logging.Metric) =>
      pulumi.interpolate`metric.type = "logging.googleapis.com/user/${m.name}" AND resource.type = "cloud_run_revision"`;

    const thresholdAlert = (
      key: string,
      displayName: string,
      condition: gcp.types.input.monitoring.AlertPolicyConditionConditionThreshold,
      documentation: string,
    ) =>
      new gcp.monitoring.AlertPolicy(
        `${name}-${key}`,
        {
          project: args.project,
          displayName: `${args.prefix}: ${displayName}`,
          combiner: 'OR',
          notificationChannels: channels,
          documentation: { content: documentation, mimeType: 'text/markdown' },
          alertStrategy: { autoClose: '1800s' },
          conditions: [{ displayName, conditionThreshold: condition }],
        },
        { ...parent, dependsOn: [predictionKnown] },
      );
    const t = args.thresholds;
    this.predictionAlerts = [
      thresholdAlert(
        'search-latency',
        `search latency p95 above ${t.latencyP95Ms} ms`,
        {
          filter: userMetric(latency),
          comparison: 'COMPARISON_GT',
          thresholdValue: t.latencyP95Ms,
          duration: '300s',
          aggregations: [
            { alignmentPeriod: '300s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_PERCENTILE_95', groupByFields: ['metric.label.kind'] },
          ],
        },
        'Searches are slow. The event fields `latencyMs.embed` and `latencyMs.index` (Logs Explorer: `jsonPayload.monitor="search"`) say whether the model or OpenSearch is the cause. Threshold: `iss:monitoring.latencyP95Ms`.',
      ),
      thresholdAlert(
        'zero-result-rate',
        `more than ${Math.round(t.zeroResultRate * 100)} % of searches return nothing`,
        {
          // Zero-result searches over all searches, both summed over 15 minutes.
          filter: userMetric(zeroResults),
          denominatorFilter: userMetric(searches),
          comparison: 'COMPARISON_GT',
          thresholdValue: t.zeroResultRate,
          duration: '0s',
          aggregations: [{ alignmentPeriod: '900s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_SUM' }],
          denominatorAggregations: [{ alignmentPeriod: '900s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_SUM' }],
        },
        "Many searches find nothing: an empty or wrong live index, a model whose scores fell under the callers' minScore, or a label filter nobody carries. Threshold: `iss:monitoring.zeroResultRate`.",
      ),
      thresholdAlert(
        'freshness-lag',
        `images take more than ${t.freshnessLagP95Seconds} s to become searchable (p95)`,
        {
          filter: userMetric(freshness),
          comparison: 'COMPARISON_GT',
          thresholdValue: t.freshnessLagP95Seconds * 1000,
          duration: '600s',
          aggregations: [{ alignmentPeriod: '600s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_PERCENTILE_95' }],
        },
        'New images are slow to become searchable: check the embed backlog (dashboard), the dispatcher schedule and the embed job executions. Threshold: `iss:monitoring.freshnessLagP95Seconds`.',
      ),
    ];

    this.alerts = [
      alert(
        'dead-letters',
        'messages in a dead-letter inbox',
        pulumi
          .all(args.deadLetterInboxes)
          .apply(
            (subs) =>
              `resource.type = "pubsub_subscription" AND metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages" AND ${inList('resource.labels.subscription_id', subs)}`,
          ),
        'ALIGN_MAX',
        'A message failed every delivery attempt. Inspect it with `gcloud pubsub subscriptions pull <inbox> --limit 10`, fix the cause, then republish it to the source topic.',
      ),
      alert(
        'job-failures',
        'failed job executions',
        pulumi
          .all(args.jobs)
          .apply(
            (jobs) =>
              `resource.type = "cloud_run_job" AND metric.type = "run.googleapis.com/job/completed_execution_count" AND metric.labels.result = "failed" AND ${inList('resource.labels.job_name', jobs)}`,
          ),
        'ALIGN_SUM',
        'An embed or reindex execution failed. See `gcloud run jobs executions list --job <job>` and its logs.',
      ),
      alert(
        'function-errors',
        'function errors',
        pulumi.interpolate`resource.type = "cloud_run_revision" AND metric.type = "logging.googleapis.com/user/${functionErrors.name}"`,
        'ALIGN_SUM',
        'A pipeline function logged an error. Open Logs Explorer with severity>=ERROR for the service named in the incident.',
      ),
      alert(
        'index-errors',
        'index write errors',
        pulumi.interpolate`resource.type = "cloud_run_revision" AND metric.type = "logging.googleapis.com/user/${indexErrors.name}"`,
        'ALIGN_SUM',
        'upsertVectors could not write to OpenSearch. Check the cluster (VM or external) and the OPENSEARCH_* secrets.',
      ),
    ];

    const chart = (title: string, filter: pulumi.Input<string>, aligner: string) =>
      pulumi.output(filter).apply((f) => ({
        title,
        xyChart: {
          dataSets: [
            { timeSeriesQuery: { timeSeriesFilter: { filter: f, aggregation: { alignmentPeriod: '60s', perSeriesAligner: aligner } } }, plotType: 'LINE' },
          ],
        },
      }));
    // Distribution metrics: p50 and p95 across every series, per minute.
    const percentileChart = (title: string, filter: pulumi.Input<string>) =>
      pulumi.output(filter).apply((f) => ({
        title,
        xyChart: {
          dataSets: ['REDUCE_PERCENTILE_50', 'REDUCE_PERCENTILE_95'].map((reducer) => ({
            timeSeriesQuery: {
              timeSeriesFilter: { filter: f, aggregation: { alignmentPeriod: '60s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: reducer } },
            },
            plotType: 'LINE',
            legendTemplate: reducer.slice('REDUCE_PERCENTILE_'.length) === '50' ? 'p50' : 'p95',
          })),
        },
      }));
    // Counter over counter, summed per 5 minutes.
    const ratioChart = (title: string, numerator: pulumi.Input<string>, denominator: pulumi.Input<string>) =>
      pulumi.all([numerator, denominator]).apply(([n, d]) => {
        const aggregation = { alignmentPeriod: '300s', perSeriesAligner: 'ALIGN_DELTA', crossSeriesReducer: 'REDUCE_SUM' };
        return {
          title,
          xyChart: {
            dataSets: [
              {
                timeSeriesQuery: { timeSeriesFilterRatio: { numerator: { filter: n, aggregation }, denominator: { filter: d, aggregation } } },
                plotType: 'LINE',
              },
            ],
          },
        };
      });
    const subs = (list: pulumi.Input<string>[]) => pulumi.all(list);
    const widgets = pulumi.all<object>([
      chart(
        'Backlog (undelivered messages)',
        subs(args.subscriptions).apply(
          (s) => `metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages" AND ${inList('resource.labels.subscription_id', s)}`,
        ),
        'ALIGN_MAX',
      ),
      chart(
        'Dead letters waiting',
        subs(args.deadLetterInboxes).apply(
          (s) => `metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages" AND ${inList('resource.labels.subscription_id', s)}`,
        ),
        'ALIGN_MAX',
      ),
      chart('Job executions by result', 'metric.type = "run.googleapis.com/job/completed_execution_count" AND resource.type = "cloud_run_job"', 'ALIGN_SUM'),
      chart('Function errors', pulumi.interpolate`metric.type = "logging.googleapis.com/user/${functionErrors.name}"`, 'ALIGN_SUM'),
      chart('Index write errors', pulumi.interpolate`metric.type = "logging.googleapis.com/user/${indexErrors.name}"`, 'ALIGN_SUM'),
      // Prediction monitoring (what `imgsearch monitor` shows locally).
      chart('Searches by kind (per minute)', pulumi.interpolate`metric.type = "logging.googleapis.com/user/${searches.name}"`, 'ALIGN_SUM'),
      percentileChart('Search latency p50 / p95 (ms)', pulumi.interpolate`metric.type = "logging.googleapis.com/user/${latency.name}"`),
      ratioChart(
        'Zero-result rate',
        pulumi.interpolate`metric.type = "logging.googleapis.com/user/${zeroResults.name}"`,
        pulumi.interpolate`metric.type = "logging.googleapis.com/user/${searches.name}"`,
      ),
      ratioChart(
        'Click-through (clicks / searches)',
        pulumi.interpolate`metric.type = "logging.googleapis.com/user/${clicks.name}"`,
        pulumi.interpolate`metric.type = "logging.googleapis.com/user/${searches.name}"`,
      ),
      percentileChart('Freshness lag p50 / p95 (ms, upload → searchable)', pulumi.interpolate`metric.type = "logging.googleapis.com/user/${freshness.name}"`),
    ]);

    this.dashboard = new gcp.monitoring.Dashboard(
      `${name}-dashboard`,
      {
        project: args.project,
        dashboardJson: widgets.apply((w) => JSON.stringify({ displayName: `${args.prefix} image search pipeline`, gridLayout: { columns: '2', widgets: w } })),
      },
      parent,
    );

    this.registerOutputs({ dashboard: this.dashboard.id });
  }
}
