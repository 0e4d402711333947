import { afterEach, describe, expect, it } from 'vitest';
import {
  bootstrapJobHint,
  cloudConfig,
  deadLetterTopicOf,
  parseCloudConfig,
  resetCloudConfigForTesting,
  topicFromPubSubSource,
} from '../../shared/wiring/cloud-config.js';
import { ConfigError } from '../../shared/errors.js';

const embedEnv = {
  GCP_PROJECT: 'my-project-123',
  IMAGES_BUCKET: 'iss-images',
  MODELS_BUCKET: 'iss-models',
  FEATURES_BUCKET: 'iss-features',
  TOPIC_IMAGE_EVENTS: 'iss-image-events',
  SUBSCRIPTION_IMAGE_EVENTS: 'iss-image-events-embed',
  TOPIC_EMBEDDINGS: 'iss-embeddings',
  ONNX_EXECUTION_PROVIDER: 'cuda',
  BATCH_SIZE: '64',
};

describe('cloud configuration', () => {
  afterEach(() => resetCloudConfigForTesting());

  it('parses one entry point’s variables with types and defaults', () => {
    const config = parseCloudConfig('embedJob', embedEnv);
    expect(config).toMatchObject({ BATCH_SIZE: 64, ONNX_EXECUTION_PROVIDER: 'cuda', MAX_PIXELS: 50_000_000, CLOUD_RUN_TASK_COUNT: 1 });
  });

  it('checks only what the entry point needs', () => {
    expect(() =>
      parseCloudConfig('dispatchEmbed', {
        GCP_PROJECT: 'my-project-123',
        GCP_REGION: 'europe-west1',
        SUBSCRIPTION_IMAGE_EVENTS: 's-1x',
        EMBED_JOB_NAME: 'iss-embed',
      }),
    ).not.toThrow();
  });

  it('lists every missing or bad variable in one error with the fix, hiding secrets', () => {
    let error: unknown;
    try {
      parseCloudConfig('upsertVectors', {
        GCP_PROJECT: 'my-project-123',
        OPENSEARCH_URL: 'ftp://x',
        OPENSEARCH_PASSWORD: 'hunter2',
        OPENSEARCH_INDEX_ALIAS: 'Bad Alias',
        TOPIC_IMAGE_EVENTS: '',
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toMatch(/^Invalid configuration of upsertVectors:/);
    expect(message).toMatch(/- OPENSEARCH_URL="ftp:\/\/x": must start with http/);
    expect(message).toMatch(/- OPENSEARCH_INDEX_ALIAS="Bad Alias"/);
    expect(message).toMatch(/- FEATURES_BUCKET is missing \(set the feature-store bucket/);
    expect(message).toMatch(/- TOPIC_IMAGE_EVENTS is missing/);
    expect(message).not.toContain('hunter2');
  });

  it('rejects bad numbers and enums with the fix', () => {
    const bad = () => parseCloudConfig('embedJob', { ...embedEnv, BATCH_SIZE: '0', ONNX_EXECUTION_PROVIDER: 'tpu' });
    expect(bad).toThrow(/- BATCH_SIZE="0": .*\(set a whole number from 1 to 1000/);
    expect(bad).toThrow(/- ONNX_EXECUTION_PROVIDER="tpu": .*\(use ONNX_EXECUTION_PROVIDER=cpu or ONNX_EXECUTION_PROVIDER=cuda\)/);
    expect(() => parseCloudConfig('onObjectEvent', { ...embedEnv, IMAGES_BUCKET: 'gs://iss-images' })).toThrow(
      /IMAGES_BUCKET="gs:\/\/iss-images": must be a bare bucket name/,
    );
  });

  it('reads process.env once and re-reads after a reset', () => {
    const saved = { ...process.env };
    try {
      Object.assign(process.env, embedEnv);
      expect(cloudConfig('embedJob').BATCH_SIZE).toBe(64);
      process.env.BATCH_SIZE = '8';
      expect(cloudConfig('embedJob').BATCH_SIZE).toBe(64);
      resetCloudConfigForTesting();
      expect(cloudConfig('embedJob').BATCH_SIZE).toBe(8);
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });

  it('names dead-letter topics <topic>-dead-letter and reads a topic from a Pub/Sub source', () => {
    expect(deadLetterTopicOf('iss-embeddings')).toBe('iss-embeddings-dead-letter');
    expect(topicFromPubSubSource('//pubsub.googleapis.com/projects/p1/topics/iss-embeddings')).toBe('projects/p1/topics/iss-embeddings');
    expect(topicFromPubSubSource('//storage.googleapis.com/projects/_/buckets/b')).toBeNull();
  });

  it('reads the bootstrap job settings: models bucket, and the initial model (default unless clip-vit-b32)', () => {
    expect(parseCloudConfig('bootstrapModel', { GCP_PROJECT: 'my-project-123', MODELS_BUCKET: 'iss-models' })).toEqual({
      GCP_PROJECT: 'my-project-123',
      MODELS_BUCKET: 'iss-models',
      INITIAL_MODEL: 'default',
    });
    expect(
      parseCloudConfig('bootstrapModel', { GCP_PROJECT: 'my-project-123', MODELS_BUCKET: 'iss-models', INITIAL_MODEL: 'clip-vit-b32' }).INITIAL_MODEL,
    ).toBe('clip-vit-b32');
    const bad = () => parseCloudConfig('bootstrapModel', { GCP_PROJECT: 'my-project-123', INITIAL_MODEL: 'resnet' });
    expect(bad).toThrow(/- MODELS_BUCKET is missing/);
    expect(bad).toThrow(/- INITIAL_MODEL="resnet": .*\(use INITIAL_MODEL=default .* or INITIAL_MODEL=clip-vit-b32/);
  });

  it('names the bootstrap job and the command that runs it in "no model yet" hints (optional settings of embed job and search)', () => {
    const embed = parseCloudConfig('embedJob', { ...embedEnv, BOOTSTRAP_JOB_NAME: 'iss-bootstrap-model', GCP_REGION: 'europe-west1' });
    expect(bootstrapJobHint(embed)).toMatch(
      /^the bootstrap job iss-bootstrap-model has not registered the first model .*`gcloud run jobs execute iss-bootstrap-model --region europe-west1 --wait`/,
    );
    expect(bootstrapJobHint(parseCloudConfig('embedJob', embedEnv))).toMatch(/gcloud run jobs execute <prefix>-bootstrap-model --region <region> --wait/);
    expect(() => parseCloudConfig('embedJob', { ...embedEnv, BOOTSTRAP_JOB_NAME: 'Bad_Name' })).toThrow(
      /BOOTSTRAP_JOB_NAME="Bad_Name": must be a Cloud Run job name/,
    );
    const search = parseCloudConfig('search', {
      OPENSEARCH_URL: 'https://10.0.0.5:9200',
      MODELS_BUCKET: 'm-1',
      FEATURES_BUCKET: 'f-1',
      IMAGES_BUCKET: 'i-1',
      BOOTSTRAP_JOB_NAME: 'iss-bootstrap-model',
    });
    expect(search.BOOTSTRAP_JOB_NAME).toBe('iss-bootstrap-model');
  });
});
