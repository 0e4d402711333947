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
  /** Main subscriptions whose backlog the dashboard shows. */
  subscriptions: pulumi.Input<string>[];
}

const inList = (label: string, values: string[]) => `${label} = one_of(${values.map((v) => `"${v}"`).join(', ')})`;

/**
 * What an operator watches: a dashboard (backlogs, dead letters, job executions, errors) and
 * alerts on anything that means an image will not be searchable without help: a dead letter,
 * a failed embed/reindex execution, function errors, index write errors.
 */
export class Monitoring extends pulumi.ComponentResource {
  public readonly alerts: gcp.monitoring.AlertPolicy[];
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
    const subs = (list: pulumi.Input<string>[]) => pulumi.all(list);
    const widgets = pulumi.all([
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
