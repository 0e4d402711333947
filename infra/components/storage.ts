import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import type { Placement } from '../placement.js';

export interface StorageArgs extends Placement {
  settings: ParsedStackConfig['storage'];
  /** Origins of the search page, whose browsers PUT uploads to the images bucket through signed URLs (Search.uploadOrigins). */
  uploadOrigins?: pulumi.Input<pulumi.Input<string>[]>;
}

/**
 * The buckets: `images` (what users upload; the one thing that cannot be rebuilt), `models`
 * (registry: manifests, weights, metrics; versioned so a bad promotion can be rolled back),
 * `features` (base embeddings for retraining; rebuildable, so they expire) and `sources`
 * (function source archives). All private: uniform bucket-level access and public access
 * prevention enforced, so no ACL or allUsers grant can ever expose an object.
 */
export class Storage extends pulumi.ComponentResource {
  public readonly images: gcp.storage.Bucket;
  public readonly models: gcp.storage.Bucket;
  public readonly features: gcp.storage.Bucket;
  public readonly sources: gcp.storage.Bucket;

  constructor(name: string, args: StorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:storage:Buckets', name, {}, opts);
    const location = (args.settings.location ?? args.region).toUpperCase();
    const bucket = (suffix: string, extra: Partial<gcp.storage.BucketArgs> = {}) =>
      new gcp.storage.Bucket(
        `${name}-${suffix}`,
        {
          project: args.project,
          // Bucket names are global: the project id keeps them unique.
          name: `${args.project}-${args.prefix}-${suffix}`,
          location,
          labels: args.labels,
          uniformBucketLevelAccess: true,
          publicAccessPrevention: 'enforced',
          forceDestroy: args.settings.forceDestroy,
          ...extra,
        },
        { parent: this },
      );

    // The page's uploads: the browser PUTs each file with a signed URL (shared/adapters/gcp/gcs-signed-uploads.ts).
    // CORS lets exactly the search page's origin do that, and send the signed headers
    // (cloud.google.com/storage/docs/cross-origin, cloud.google.com/storage/docs/using-cors); nothing else is shared.
    this.images = bucket(
      'images',
      args.uploadOrigins
        ? {
            cors: [
              {
                origins: args.uploadOrigins,
                methods: ['PUT'],
                responseHeaders: ['Content-Type', 'x-goog-content-length-range', 'x-goog-if-generation-match'],
                maxAgeSeconds: 3600,
              },
            ],
          }
        : {},
    );
    this.models = bucket('models', {
      versioning: { enabled: true },
      lifecycleRules: [
        {
          // Keep the last few superseded copies of each registry file, drop older ones.
          action: { type: 'Delete' },
          condition: { numNewerVersions: args.settings.modelVersionsToKeep, withState: 'ARCHIVED' },
        },
      ],
    });
    this.features = bucket('features', {
      // The transient embedding shards (embedding messages sent by reference) expire, and so do
      // click-feedback objects (anyone allowed to search can add some; retraining reads only the
      // newest) and the sampled query vectors (the drift check reads only the newest). Base
      // embeddings and rejection records are what retraining and reindexing read.
      // No softDeletePolicy is set: Cloud Storage's default (7 days unless the organization set
      // another) keeps each deleted or expired object restorable for that long after (README "Drift").
      lifecycleRules: [
        { action: { type: 'Delete' }, condition: { age: args.settings.featuresRetentionDays, matchesPrefixes: ['embeddings/shards/'] } },
        { action: { type: 'Delete' }, condition: { age: args.settings.feedbackRetentionDays, matchesPrefixes: ['feedback/'] } },
        { action: { type: 'Delete' }, condition: { age: args.settings.querySampleRetentionDays, matchesPrefixes: ['query-vectors/'] } },
      ],
    });
    this.sources = bucket('sources', {
      // Archives are replaced on every code change; Pulumi deletes the old object itself.
      forceDestroy: true,
    });

    this.registerOutputs({
      images: this.images.name,
      models: this.models.name,
      features: this.features.name,
      sources: this.sources.name,
    });
  }
}
