import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { Embedding } from './components/embedding.js';
import { Images } from './components/images.js';
import { Indexing } from './components/indexing.js';
import { ObjectEvents } from './components/ingest.js';
import { Messaging } from './components/messaging.js';
import { Monitoring } from './components/monitoring.js';
import { FunctionBuilder } from './components/node-function.js';
import { ProjectApis } from './components/project-apis.js';
import { ServiceAgents } from './components/service-agents.js';
import { bootstrapJobName, ModelBootstrap } from './components/model-bootstrap.js';
import { containerCommand } from './packaging.js';
import { Retraining } from './components/retraining.js';
import { Drift } from './components/drift.js';
import { pageUploadsMode, Search, searchPageOrigins } from './components/search.js';
import { Storage } from './components/storage.js';
import type { StackConfig } from './config.js';
import type { EnvValues } from './env.js';
import type { Placement } from './placement.js';

/**
 * Wires the components together. Kept apart from index.ts so tests can build the stack with any
 * configuration; index.ts reads the config and exports the outputs.
 */
export function createStack(cfg: StackConfig, extra: { transformations?: pulumi.ResourceTransformation[] } = {}) {
  const labels = { app: 'image-semantic-search', stack: cfg.prefix };
  const apis = new ProjectApis('apis', { project: cfg.project, region: cfg.region, labels }, { transformations: extra.transformations });
  // Every Google resource goes through the provider that waits for the APIs.
  const opts: pulumi.ComponentResourceOptions = { providers: { gcp: apis.provider }, transformations: extra.transformations };
  const at: Placement = { project: cfg.project, region: cfg.region, prefix: cfg.prefix, labels };

  // Pub/Sub's agent dead-letters and signs push tokens; Eventarc's checks triggers; Vertex AI's pulls
  // the trainer image. Created explicitly so they exist, with their roles, within this `up`.
  const agents = new ServiceAgents('service-agents', { project: cfg.project, iap: cfg.search.access === 'iap' }, opts);
  const pubsubServiceAgent = agents.pubsub.email;
  const storageServiceAgent = gcp.storage.getProjectServiceAccountOutput({ project: cfg.project }, { provider: apis.provider }).emailAddress;

  // The search page's origin, for the images bucket's CORS (the page PUTs uploads with signed URLs;
  // with public access it takes no uploads, so the bucket shares nothing).
  const projectNumber = gcp.organizations.getProjectOutput({ projectId: cfg.project }, { provider: apis.provider }).number;
  const uploadOrigins = searchPageOrigins({ settings: cfg.search, prefix: cfg.prefix, region: cfg.region, projectNumber });
  const corsOrigins = pageUploadsMode(cfg.search) === 'signed-url' ? { uploadOrigins } : {};
  const storage = new Storage('storage', { ...at, settings: cfg.storage, ...corsOrigins }, opts);
  const messaging = new Messaging('messaging', { ...at, settings: cfg.messaging, pubsubServiceAgent }, opts);
  const images = new Images('images', { ...at, settings: cfg.images }, opts);
  const builder = new FunctionBuilder('function-builder', { ...at, sourcesBucket: storage.sources.name }, opts);

  // The values workloads may receive; env.ts decides which workload sees which.
  const env: EnvValues = {
    GCP_PROJECT: cfg.project,
    GCP_REGION: cfg.region,
    IMAGES_BUCKET: storage.images.name,
    MODELS_BUCKET: storage.models.name,
    FEATURES_BUCKET: storage.features.name,
    IMAGE_PREFIX: cfg.embed.imagePrefix,
    TOPIC_IMAGE_EVENTS: messaging.imageEvents.topic.name,
    SUBSCRIPTION_IMAGE_EVENTS: messaging.imageEventsSubscription.name,
    TOPIC_EMBEDDINGS: messaging.embeddings.topic.name,
    TOPIC_RETRAIN_REQUESTS: messaging.retrainRequests.topic.name,
    OPENSEARCH_INDEX_ALIAS: cfg.opensearch.indexAlias,
    MAX_PIXELS: String(cfg.embed.maxPixels),
    MAX_BYTES: String(cfg.embed.maxBytes),
    BATCH_SIZE: String(cfg.embed.batchSize),
    BOOTSTRAP_JOB_NAME: bootstrapJobName(cfg.prefix),
  };
  const functionsCommon = { sourcesBucket: storage.sources.name, buildServiceAccountId: builder.account.name };

  const ingest = new ObjectEvents(
    'ingest',
    {
      ...at,
      ...functionsCommon,
      imagesBucket: storage.images.name,
      featuresBucket: storage.features.name,
      imageEventsTopic: messaging.imageEvents.topic.name,
      imageEventsDeadLetterTopic: messaging.imageEvents.deadLetterTopic.name,
      storageServiceAgent,
      eventarcAgent: agents.eventarc,
      env,
    },
    opts,
  );

  const embedding = new Embedding(
    'embedding',
    {
      ...at,
      ...functionsCommon,
      settings: cfg.embed,
      deletionProtection: cfg.deletionProtection,
      image: images.refs.embed,
      buckets: { images: storage.images.name, models: storage.models.name, features: storage.features.name },
      imageEventsSubscription: messaging.imageEventsSubscription.name,
      imageEventsDeadLetterTopic: messaging.imageEvents.deadLetterTopic.name,
      embeddingsTopic: messaging.embeddings.topic.name,
      env,
    },
    opts,
  );

  const indexing = new Indexing(
    'indexing',
    {
      ...at,
      ...functionsCommon,
      opensearch: cfg.opensearch,
      messaging: cfg.messaging,
      opensearchUrl: cfg.opensearchUrl,
      opensearchUsername: cfg.opensearchUsername,
      opensearchPassword: cfg.opensearchPassword,
      embeddings: messaging.embeddings,
      imageEventsTopic: messaging.imageEvents.topic.name,
      featuresBucket: storage.features.name,
      pubsubServiceAgent,
      env,
    },
    opts,
  );
  const opensearchSecrets = { ids: indexing.opensearch.secretIds, secrets: indexing.opensearch.secrets };

  const retraining = new Retraining(
    'retraining',
    {
      ...at,
      ...functionsCommon,
      settings: cfg.retrain,
      messaging: cfg.messaging,
      deletionProtection: cfg.deletionProtection,
      trainerImage: images.refs.trainer,
      retrainRequests: messaging.retrainRequests,
      buckets: { models: storage.models.name, features: storage.features.name },
      opensearchSecrets,
      vpcConnector: indexing.opensearch.connectorId,
      pubsubServiceAgent,
      env,
    },
    opts,
  );

  // Scheduled drift check: requests a retraining on retrain-requests when drift calls for one.
  const drift = new Drift(
    'drift',
    {
      ...at,
      ...functionsCommon,
      deletionProtection: cfg.deletionProtection,
      trainerImage: images.refs.trainer,
      retrainRequests: messaging.retrainRequests,
      buckets: { models: storage.models.name, features: storage.features.name },
      env,
    },
    opts,
  );

  const bootstrap = new ModelBootstrap(
    'model-bootstrap',
    {
      ...at,
      settings: cfg.model,
      deletionProtection: cfg.deletionProtection,
      image: images.refs.trainer,
      command: containerCommand('trainer', 'jobs/bootstrap-model/main.ts'),
      modelsBucket: storage.models.name,
      env,
    },
    opts,
  );

  const search = new Search(
    'search',
    {
      ...at,
      settings: cfg.search,
      deletionProtection: cfg.deletionProtection,
      image: images.refs.search,
      buckets: { images: storage.images.name, models: storage.models.name, features: storage.features.name },
      opensearchSecrets,
      vpcConnector: indexing.opensearch.connectorId,
      env,
      iapAgent: agents.iap?.email,
      // The URL whose origin the images bucket's CORS admits (uploads from the page).
      pageUrl: uploadOrigins.apply((o) => o[0]!),
      imagePrefix: cfg.embed.imagePrefix,
    },
    opts,
  );

  const inboxes = [messaging.imageEvents, messaging.embeddings, messaging.retrainRequests].map((t) => t.deadLetterInbox.name);
  const monitoring = new Monitoring(
    'monitoring',
    {
      ...at,
      alertEmail: cfg.alertEmail,
      deadLetterInboxes: inboxes,
      jobs: [embedding.job.name, retraining.reindexJob.name, drift.job.name],
      functionServices: [
        ingest.function.serviceName,
        embedding.dispatch.serviceName,
        indexing.upsert.serviceName,
        retraining.start.serviceName,
        drift.start.serviceName,
        search.service.name,
      ],
      indexService: indexing.upsert.serviceName,
      searchService: search.service.name,
      subscriptions: [messaging.imageEventsSubscription.name, indexing.subscription.subscription.name],
      thresholds: cfg.monitoring,
    },
    opts,
  );

  return {
    components: { apis, agents, bootstrap, storage, messaging, images, builder, ingest, embedding, indexing, retraining, drift, search, monitoring },
    outputs: {
      imagesBucket: storage.images.name,
      modelsBucket: storage.models.name,
      featuresBucket: storage.features.name,
      imageEventsTopic: messaging.imageEvents.topic.name,
      embedJob: embedding.job.name,
      reindexJob: retraining.reindexJob.name,
      searchUrl: search.url,
      searchAccess: cfg.search.access,
      /** `public`: the IP address to point the domain's DNS A record at. */
      searchAddress: search.address,
      opensearchMode: cfg.opensearch.mode,
      deadLetterInboxes: pulumi.all(inboxes),
      dashboard: monitoring.dashboard.id,
    },
  };
}
