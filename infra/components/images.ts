import * as dockerBuild from '@pulumi/docker-build';
import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import path from 'node:path';
import type { ParsedStackConfig } from '../config.js';
import { REPO_ROOT } from '../function-source.js';
import type { Placement } from '../placement.js';

export interface ImagesArgs extends Placement {
  settings: ParsedStackConfig['images'];
}

/** The containers this stack runs, each built from a Dockerfile in deploy/. */
export const IMAGE_DOCKERFILES = {
  embed: 'deploy/embed.Dockerfile',
  trainer: 'deploy/trainer.Dockerfile',
  search: 'deploy/search.Dockerfile',
} as const;
export type ImageName = keyof typeof IMAGE_DOCKERFILES;

/**
 * An Artifact Registry repository and the three images (embed job on CUDA, trainer + reindex,
 * search service), built with BuildKit and pushed on `pulumi up`. A prebuilt reference in config
 * (`iss:images.embed` …) replaces the build, e.g. when CI builds the images.
 */
export class Images extends pulumi.ComponentResource {
  public readonly repository: gcp.artifactregistry.Repository;
  /** Digest-pinned references, so a new build rolls the jobs and service forward. */
  public readonly refs: Record<ImageName, pulumi.Output<string>>;

  constructor(name: string, args: ImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:images:Registry', name, {}, opts);

    this.repository = new gcp.artifactregistry.Repository(
      `${name}-repository`,
      {
        project: args.project,
        location: args.region,
        repositoryId: `${args.prefix}-images`,
        format: 'DOCKER',
        labels: args.labels,
        cleanupPolicies: [
          { id: 'keep-recent', action: 'KEEP', mostRecentVersions: { keepCount: 10 } },
          // Untagged layers from superseded builds cost storage and serve nobody.
          { id: 'drop-old-untagged', action: 'DELETE', condition: { tagState: 'UNTAGGED', olderThan: '1209600s' } },
        ],
      },
      { parent: this },
    );

    const host = `${args.region}-docker.pkg.dev`;
    const base = pulumi.interpolate`${host}/${args.project}/${this.repository.repositoryId}`;
    const token = gcp.organizations.getClientConfigOutput({ parent: this }).accessToken;

    const build = (image: ImageName): pulumi.Output<string> => {
      const prebuilt = args.settings[image];
      if (prebuilt) return pulumi.output(prebuilt);
      if (!args.settings.build) {
        throw new Error(`iss:images.build is false but iss:images.${image} is not set (fix: pulumi config set --path iss:images.${image} <image-ref>)`);
      }
      const built = new dockerBuild.Image(
        `${name}-${image}`,
        {
          context: { location: REPO_ROOT },
          dockerfile: { location: path.join(REPO_ROOT, IMAGE_DOCKERFILES[image]) },
          platforms: ['linux/amd64'],
          push: true,
          // Never build on `pulumi preview`: a preview must not need Docker or push anything.
          buildOnPreview: false,
          tags: [pulumi.interpolate`${base}/${image}:latest`],
          registries: [{ address: host, username: 'oauth2accesstoken', password: token }],
        },
        { parent: this, dependsOn: [this.repository] },
      );
      return built.ref;
    };

    this.refs = { embed: build('embed'), trainer: build('trainer'), search: build('search') };
    this.registerOutputs({ repository: this.repository.name, ...this.refs });
  }
}
