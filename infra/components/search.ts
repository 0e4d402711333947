import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import * as random from '@pulumi/random';
import type { ParsedStackConfig } from '../config.js';
import { cloudRunEnv, type EnvValues, type SecretIds } from '../env.js';
import { cloudRunServiceMember, grantOnBucket, grantOnSecret, grantOnServiceAccount } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import { containerCommand } from '../packaging.js';
import { workloadLabels, type Placement } from '../placement.js';

export interface SearchArgs extends Placement {
  settings: ParsedStackConfig['search'];
  deletionProtection: boolean;
  image: pulumi.Input<string>;
  buckets: { images: pulumi.Input<string>; models: pulumi.Input<string>; features: pulumi.Input<string> };
  opensearchSecrets: { ids: SecretIds; secrets: gcp.secretmanager.Secret[] };
  vpcConnector?: pulumi.Input<string>;
  env: EnvValues;
  /** IAP's service agent (`access: iap`): it calls the service once IAP let a user in. */
  iapAgent?: pulumi.Input<string>;
  /** The URL people open the page at ({@link searchPageOrigins}, the images bucket's CORS origin); default the service's `uri`. */
  pageUrl?: pulumi.Input<string>;
  /** The watched prefix of the images bucket (embed.imagePrefix): page uploads may create objects there only. */
  imagePrefix: string;
}

/**
 * Proxies that append to X-Forwarded-For in front of the service (TRUSTED_PROXY_HOPS): Cloud Run's
 * front end; in public mode also the external Application Load Balancer, which sends
 * `<client-supplied…>, <client-ip>, <lb-ip>` (cloud.google.com/load-balancing/docs/https, "X-Forwarded-For
 * header"). With one hop the app would key every client's rate limit by the load balancer's address.
 */
function trustedProxyHops(access: ParsedStackConfig['search']['access']): string {
  return access === 'public' ? '2' : '1';
}

/**
 * Whether the page takes uploads (UPLOADS, functions/search-server.ts): never with `public` access,
 * where anyone could add images to the bucket (security review, finding 1); otherwise through signed URLs.
 * Images then go in with `gcloud storage cp` (README "Add images").
 */
export function pageUploadsMode(settings: Pick<ParsedStackConfig['search'], 'access'>): 'off' | 'signed-url' {
  return settings.access === 'public' ? 'off' : 'signed-url';
}

/** The Cloud Run service's name. */
export const searchServiceName = (prefix: string): string => `${prefix}-search`;

/**
 * Where browsers open the search page, for the images bucket's CORS (its uploads): `public`, the
 * domain (the run.app URL is off); otherwise the service's deterministic URL
 * `https://SERVICE-PROJECT_NUMBER.REGION.run.app` (cloud.google.com/run/docs/triggering/https-request).
 * Known before the service exists, so the bucket (which the service's grants need first) can carry it.
 */
export function searchPageOrigins(args: {
  settings: ParsedStackConfig['search'];
  prefix: string;
  region: string;
  projectNumber: pulumi.Input<string>;
}): pulumi.Output<string[]> {
  if (args.settings.access === 'public') return pulumi.output([`https://${args.settings.domain}`]);
  return pulumi.interpolate`https://${searchServiceName(args.prefix)}-${args.projectNumber}.${args.region}.run.app`.apply((u) => [u]);
}

/**
 * The search API and web page as a Cloud Run service, reachable as `search.access` says
 * (README "Security model"):
 * - `private`: the invoker check stays on; callers need roles/run.invoker (nobody has it by default:
 *   a team member runs `gcloud run services proxy`, which signs requests with their identity).
 * - `iap`: IAP on the service itself signs browser users in with Google and lets `iapMembers` in
 *   (roles/iap.httpsResourceAccessor); IAP's service agent then passes the invoker check.
 * - `public`: the invoker check is off, but only the external HTTPS load balancer may reach the
 *   service (ingress: internal and load balancing), and its backend carries a Cloud Armor policy
 *   limiting each client IP to `rateLimitPerMinute` requests (429 beyond). Cloud Armor attaches to
 *   load-balancer backends only, hence the serverless NEG, backend, URL map, managed certificate on
 *   `domain`, HTTPS proxy (SSL policy MODERN, TLS 1.2+) and global address. The run.app URL is
 *   disabled, so internal VPC traffic cannot bypass the load balancer either.
 * The service also gets the HMAC key of its feedback tokens (generated here, kept in Secret Manager)
 * so that every instance accepts clicks on results any instance served.
 */
export class Search extends pulumi.ComponentResource {
  public readonly service: gcp.cloudrunv2.Service;
  public readonly url: pulumi.Output<string>;
  /** `public`: the load balancer's IP address (the DNS A record of `domain`). */
  public readonly address?: pulumi.Output<string>;
  public readonly securityPolicy?: gcp.compute.SecurityPolicy;

  constructor(name: string, args: SearchArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:search:Service', name, {}, opts);
    const parent = { parent: this };
    const s = args.settings;

    const runner = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'search',
        project: args.project,
        purpose: 'Search service: queries OpenSearch, loads the model, serves images, records feedback',
      },
      parent,
    );
    const member = serviceAccountMember(runner.email);
    const uploads = pageUploadsMode(s);
    const grants = [
      grantOnBucket(`${name}-images-viewer`, args.buckets.images, { role: 'roles/storage.objectViewer', member }, parent),
      grantOnBucket(`${name}-models-viewer`, args.buckets.models, { role: 'roles/storage.objectViewer', member }, parent),
      // Reads rejection records (rejected/) for the status page.
      grantOnBucket(`${name}-features-viewer`, args.buckets.features, { role: 'roles/storage.objectViewer', member, prefix: 'rejected/' }, parent),
      // Writes click feedback as new, uniquely named objects under feedback/: create is enough,
      // so the service can never overwrite or delete a feature shard or a rejection record.
      grantOnBucket(`${name}-features-creator`, args.buckets.features, { role: 'roles/storage.objectCreator', member, prefix: 'feedback/' }, parent),
      // Samples image-query vectors for the drift check (querySampleRate of them), in batches under
      // query-vectors/ that are likewise new, uniquely named and created only if absent
      // (shared/services/query-vector-objects.ts). Rate 0: nothing is sampled, and nothing granted.
      ...(s.querySampleRate > 0
        ? [
            grantOnBucket(
              `${name}-query-sample-creator`,
              args.buckets.features,
              { role: 'roles/storage.objectCreator', member, prefix: 'query-vectors/' },
              parent,
            ),
          ]
        : []),
      // Uploads from the page (not with public access): the service signs URLs as itself (no key file),
      // through IAM Credentials signBlob, which needs iam.serviceAccounts.signBlob on its own account —
      // tokenCreator on itself, not on the project (cloud.google.com/storage/docs/authentication/creating-signatures).
      // A signed URL allows only what its signer may do: create objects under the watched prefix of the
      // images bucket (objectCreator, conditioned on the prefix when there is one: no overwrite, no delete,
      // nothing elsewhere in the bucket; the URL also carries x-goog-if-generation-match: 0).
      ...(uploads === 'signed-url'
        ? [
            grantOnServiceAccount(`${name}-signs-as-itself`, runner.name, { role: 'roles/iam.serviceAccountTokenCreator', member }, parent),
            grantOnBucket(`${name}-images-creator`, args.buckets.images, { role: 'roles/storage.objectCreator', member, prefix: args.imagePrefix }, parent),
          ]
        : []),
      ...args.opensearchSecrets.secrets.map((secret, i) =>
        grantOnSecret(`${name}-secret-accessor-${i}`, args.project, secret.secretId, { role: 'roles/secretmanager.secretAccessor', member }, parent),
      ),
    ];

    // Feedback tokens: one key for every instance (shared/services/feedback.ts). Generated once and
    // kept in the stack's state, so tokens survive deployments.
    const feedbackKey = new random.RandomPassword(`${name}-feedback-key`, { length: 48, special: false }, parent);
    const feedbackSecret = new gcp.secretmanager.Secret(
      `${name}-feedback-key-secret`,
      { project: args.project, secretId: `${args.prefix}-feedback-token-key`, labels: args.labels, replication: { auto: {} } },
      parent,
    );
    const feedbackVersion = new gcp.secretmanager.SecretVersion(
      `${name}-feedback-key-version`,
      { secret: feedbackSecret.id, secretData: feedbackKey.result },
      parent,
    );
    grants.push(
      grantOnSecret(`${name}-feedback-key-accessor`, args.project, feedbackSecret.secretId, { role: 'roles/secretmanager.secretAccessor', member }, parent),
    );
    const secretIds = { ...args.opensearchSecrets.ids, FEEDBACK_TOKEN_KEY: feedbackSecret.secretId };

    this.service = new gcp.cloudrunv2.Service(
      `${name}-service`,
      {
        project: args.project,
        location: args.region,
        name: searchServiceName(args.prefix),
        labels: workloadLabels(args.labels, 'search'),
        deletionProtection: args.deletionProtection,
        // Public: only through the load balancer (and its Cloud Armor policy), never the run.app URL.
        ingress: s.access === 'public' ? 'INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER' : 'INGRESS_TRAFFIC_ALL',
        invokerIamDisabled: s.access === 'public',
        // With the invoker check off, "internal" ingress would still admit VPC traffic to the run.app
        // URL without identity (and without Cloud Armor): public mode turns that URL off altogether.
        defaultUriDisabled: s.access === 'public',
        // Disabling the default URL is a beta feature of Cloud Run (cloud.google.com/run/docs/configuring/
        // services/default-url: `gcloud beta run … --no-default-url`); the Admin API v2 takes it only at
        // launch stage BETA. Other modes use GA features only and leave the stage to its default.
        ...(s.access === 'public' ? { launchStage: 'BETA' } : {}),
        iapEnabled: s.access === 'iap',
        template: {
          serviceAccount: runner.email,
          scaling: { minInstanceCount: s.minInstances, maxInstanceCount: s.maxInstances },
          vpcAccess: args.vpcConnector ? { connector: args.vpcConnector, egress: 'PRIVATE_RANGES_ONLY' } : undefined,
          containers: [
            {
              image: args.image,
              ...containerCommand('search', 'functions/search-server.ts'),
              ports: { containerPort: 8080 },
              envs: cloudRunEnv(
                'search',
                { ...args.env, TRUSTED_PROXY_HOPS: trustedProxyHops(s.access), UPLOADS: uploads, QUERY_SAMPLE_RATE: String(s.querySampleRate) },
                secretIds,
              ),
              // CPU only while a request is open: work a request starts must finish before its answer
              // (the query sample's writes are awaited by the search that starts them).
              resources: { limits: { cpu: String(s.cpu), memory: s.memory }, cpuIdle: true, startupCpuBoost: true },
              // TCP, not HTTP: the probe must not depend on a route the service may rename.
              startupProbe: { tcpSocket: { port: 8080 }, periodSeconds: 5, failureThreshold: 24 },
            },
          ],
        },
      },
      { ...parent, dependsOn: [...grants, feedbackVersion] },
    );

    if (s.access === 'iap') this.iap(name, args);
    if (s.access === 'public') {
      const lb = this.publicLoadBalancer(name, args);
      this.address = lb.address;
      this.securityPolicy = lb.policy;
      this.url = pulumi.output(`https://${s.domain}`);
    } else this.url = args.pageUrl ? pulumi.output(args.pageUrl) : this.service.uri;
    this.registerOutputs({ url: this.url, address: this.address });
  }

  private iap(name: string, args: SearchArgs): void {
    const parent = { parent: this };
    if (!args.iapAgent) throw new Error('search.access "iap" needs the IAP service agent');
    // IAP calls the service as its agent once a user is let in: the agent needs the invoker role.
    cloudRunServiceMember(
      `${name}-iap-agent-invoker`,
      {
        project: args.project,
        location: args.region,
        service: this.service.name,
        role: 'roles/run.invoker',
        member: pulumi.interpolate`serviceAccount:${args.iapAgent}`,
      },
      parent,
    );
    args.settings.iapMembers.forEach(
      (m, i) =>
        new gcp.iap.WebCloudRunServiceIamMember(
          `${name}-iap-user-${i}`,
          { project: args.project, location: args.region, cloudRunServiceName: this.service.name, role: 'roles/iap.httpsResourceAccessor', member: m },
          parent,
        ),
    );
  }

  private publicLoadBalancer(name: string, args: SearchArgs) {
    const parent = { parent: this };
    const s = args.settings;
    const everyone = { versionedExpr: 'SRC_IPS_V1', config: { srcIpRanges: ['*'] } };
    const policy = new gcp.compute.SecurityPolicy(
      `${name}-armor`,
      {
        project: args.project,
        name: `${args.prefix}-search-armor`,
        description: 'Per-client rate limit of the public search service',
        type: 'CLOUD_ARMOR',
        rules: [
          {
            priority: 1000,
            action: 'throttle',
            description: `at most ${s.rateLimitPerMinute} requests per minute per client IP`,
            match: everyone,
            rateLimitOptions: {
              conformAction: 'allow',
              exceedAction: 'deny(429)',
              enforceOnKey: 'IP',
              rateLimitThreshold: { count: s.rateLimitPerMinute, intervalSec: 60 },
            },
          },
          { priority: 2147483647, action: 'allow', description: 'default rule', match: everyone },
        ],
      },
      parent,
    );
    const neg = new gcp.compute.RegionNetworkEndpointGroup(
      `${name}-neg`,
      {
        project: args.project,
        region: args.region,
        name: `${args.prefix}-search-neg`,
        networkEndpointType: 'SERVERLESS',
        cloudRun: { service: this.service.name },
      },
      parent,
    );
    const backend = new gcp.compute.BackendService(
      `${name}-backend`,
      {
        project: args.project,
        name: `${args.prefix}-search-backend`,
        loadBalancingScheme: 'EXTERNAL_MANAGED',
        protocol: 'HTTPS',
        securityPolicy: policy.selfLink,
        backends: [{ group: neg.id }],
      },
      parent,
    );
    const urlMap = new gcp.compute.URLMap(`${name}-url-map`, { project: args.project, name: `${args.prefix}-search`, defaultService: backend.id }, parent);
    const cert = new gcp.compute.ManagedSslCertificate(
      `${name}-cert`,
      { project: args.project, name: `${args.prefix}-search-cert`, managed: { domains: [s.domain!] } },
      parent,
    );
    // Google's default SSL policy is COMPATIBLE (TLS 1.0 and weak ciphers): browsers need neither.
    const sslPolicy = new gcp.compute.SSLPolicy(
      `${name}-ssl-policy`,
      { project: args.project, name: `${args.prefix}-search-tls`, profile: 'MODERN', minTlsVersion: 'TLS_1_2' },
      parent,
    );
    const proxy = new gcp.compute.TargetHttpsProxy(
      `${name}-https-proxy`,
      { project: args.project, name: `${args.prefix}-search-https`, urlMap: urlMap.id, sslCertificates: [cert.id], sslPolicy: sslPolicy.selfLink },
      parent,
    );
    const address = new gcp.compute.GlobalAddress(`${name}-address`, { project: args.project, name: `${args.prefix}-search` }, parent);
    new gcp.compute.GlobalForwardingRule(
      `${name}-https`,
      {
        project: args.project,
        name: `${args.prefix}-search-https`,
        target: proxy.id,
        ipAddress: address.address,
        portRange: '443',
        loadBalancingScheme: 'EXTERNAL_MANAGED',
      },
      parent,
    );
    return { policy, address: address.address };
  }
}
