import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import * as tls from '@pulumi/tls';
import type { ParsedStackConfig } from '../config.js';
import type { SecretIds } from '../env.js';
import { grantOnRepository, grantOnSecret } from '../grants.js';
import { grantOnProject, serviceAccount, serviceAccountMember } from '../iam.js';
import { opensearchStartupScript } from '../opensearch-startup.js';
import type { Placement } from '../placement.js';

export interface OpenSearchArgs extends Placement {
  settings: ParsedStackConfig['opensearch'];
  /** external mode: the cluster URL. */
  url?: string;
  username: pulumi.Input<string>;
  password: pulumi.Input<string>;
}

const DATA_DEVICE = 'opensearch-data';
const OPENSEARCH_TAG = 'opensearch';

/**
 * Where vectors live, and how workloads reach it. The URL and credentials are Secret Manager
 * secrets in both modes, so workloads are wired the same way whatever runs the cluster.
 *
 * `vm` mode: a private network with Private Google Access, a Serverless VPC Access connector for
 * the functions, jobs and service, and one Container-Optimized OS VM with a persistent data disk,
 * no public IP, reachable on 9200 only from the connector's range. Traffic to it is HTTPS: the stack
 * generates a CA and a certificate for the VM's internal address (@pulumi/tls; the keys live in the
 * stack's encrypted state and in Secret Manager), the VM serves with it, and every client pins that
 * CA (OPENSEARCH_CA_CERT), so the basic-auth credentials never cross the VPC in clear text.
 */
export class OpenSearch extends pulumi.ComponentResource {
  public readonly secretIds: SecretIds;
  public readonly secrets: gcp.secretmanager.Secret[];
  /** Connector id for vpcAccess / vpcConnector; undefined for an external cluster. */
  public readonly connectorId?: pulumi.Output<string>;
  public readonly instance?: gcp.compute.Instance;
  public readonly firewall?: gcp.compute.Firewall;
  public readonly url: pulumi.Output<string>;

  constructor(name: string, args: OpenSearchArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:indexing:OpenSearch', name, {}, opts);
    const s = args.settings;

    const secret = (key: string, secretId: string, data: pulumi.Input<string>) => {
      const sec = new gcp.secretmanager.Secret(
        `${name}-${key}`,
        { project: args.project, secretId, labels: args.labels, replication: { auto: {} } },
        { parent: this },
      );
      const version = new gcp.secretmanager.SecretVersion(`${name}-${key}-version`, { secret: sec.id, secretData: pulumi.secret(data) }, { parent: this });
      return Object.assign(sec, { latest: version });
    };

    const passwordSecret = secret('password', `${args.prefix}-opensearch-password`, args.password);
    let url: pulumi.Output<string>;
    if (s.mode === 'external') {
      if (!args.url) throw new Error('iss:opensearchUrl is required when iss:opensearch.mode is "external"');
      url = pulumi.output(args.url);
    }
    let caSecret: (gcp.secretmanager.Secret & { latest: gcp.secretmanager.SecretVersion }) | undefined;
    if (s.mode === 'vm') {
      const vm = this.privateCluster(name, args, passwordSecret, secret);
      this.connectorId = vm.connector.id;
      this.instance = vm.instance;
      this.firewall = vm.firewall;
      caSecret = vm.caSecret;
      url = pulumi.interpolate`https://${vm.address.address}:9200`;
    }
    this.url = url!;

    const urlSecret = secret('url', `${args.prefix}-opensearch-url`, this.url);
    const usernameSecret = secret('username', `${args.prefix}-opensearch-username`, args.username);
    this.secrets = [urlSecret, usernameSecret, passwordSecret, ...(caSecret ? [caSecret] : [])];
    this.secretIds = {
      OPENSEARCH_URL: urlSecret.secretId,
      OPENSEARCH_USERNAME: usernameSecret.secretId,
      OPENSEARCH_PASSWORD: passwordSecret.secretId,
      ...(caSecret ? { OPENSEARCH_CA_CERT: caSecret.secretId } : {}),
    };

    this.registerOutputs({ url: this.url, connectorId: this.connectorId });
  }

  private privateCluster(
    name: string,
    args: OpenSearchArgs,
    passwordSecret: gcp.secretmanager.Secret & { latest: gcp.secretmanager.SecretVersion },
    secret: (key: string, secretId: string, data: pulumi.Input<string>) => gcp.secretmanager.Secret & { latest: gcp.secretmanager.SecretVersion },
  ) {
    const s = args.settings;
    const parent = { parent: this };
    const zone = s.zone ?? `${args.region}-a`;

    const network = new gcp.compute.Network(`${name}-network`, { project: args.project, name: `${args.prefix}-private`, autoCreateSubnetworks: false }, parent);
    const subnet = new gcp.compute.Subnetwork(
      `${name}-subnet`,
      {
        project: args.project,
        region: args.region,
        name: `${args.prefix}-private`,
        network: network.id,
        ipCidrRange: s.subnetCidr,
        // No public IP and no NAT: Google APIs (Secret Manager, Artifact Registry) via Private Google Access.
        privateIpGoogleAccess: true,
      },
      parent,
    );
    const connector = new gcp.vpcaccess.Connector(
      `${name}-connector`,
      {
        project: args.project,
        region: args.region,
        name: `${args.prefix}-conn`,
        network: network.name,
        ipCidrRange: s.connectorCidr,
        machineType: 'e2-micro',
        minInstances: 2,
        maxInstances: 3,
      },
      parent,
    );
    // The only way in: the connector's range, on the OpenSearch HTTP port, to VMs tagged opensearch.
    const firewall = new gcp.compute.Firewall(
      `${name}-allow-connector`,
      {
        project: args.project,
        name: `${args.prefix}-opensearch-from-connector`,
        network: network.id,
        direction: 'INGRESS',
        sourceRanges: [s.connectorCidr],
        targetTags: [OPENSEARCH_TAG],
        allows: [{ protocol: 'tcp', ports: ['9200'] }],
      },
      parent,
    );

    // Docker Hub through Artifact Registry, since the VM has no route to the internet.
    const dockerHub = new gcp.artifactregistry.Repository(
      `${name}-docker-hub`,
      {
        project: args.project,
        location: args.region,
        repositoryId: `${args.prefix}-docker-hub`,
        format: 'DOCKER',
        mode: 'REMOTE_REPOSITORY',
        labels: args.labels,
        remoteRepositoryConfig: { description: 'Docker Hub proxy', dockerRepository: { publicRepository: 'DOCKER_HUB' } },
      },
      parent,
    );

    const account = serviceAccount(
      `${name}-vm-sa`,
      {
        prefix: args.prefix,
        suffix: 'opensearch',
        project: args.project,
        purpose: 'OpenSearch VM: reads its admin password, pulls its image, writes logs and metrics',
      },
      parent,
    );
    const member = serviceAccountMember(account.email);

    const canReadPassword = grantOnSecret(
      `${name}-vm-password-accessor`,
      args.project,
      passwordSecret.secretId,
      {
        role: 'roles/secretmanager.secretAccessor',
        member,
      },
      parent,
    );
    const canPull = grantOnRepository(
      `${name}-vm-docker-hub-reader`,
      {
        project: args.project,
        location: args.region,
        repository: dockerHub.name,
      },
      { role: 'roles/artifactregistry.reader', member },
      parent,
    );
    grantOnProject(`${name}-vm-log-writer`, { project: args.project, role: 'roles/logging.logWriter', member }, parent);
    grantOnProject(`${name}-vm-metric-writer`, { project: args.project, role: 'roles/monitoring.metricWriter', member }, parent);

    const address = new gcp.compute.Address(
      `${name}-address`,
      { project: args.project, region: args.region, name: `${args.prefix}-opensearch`, addressType: 'INTERNAL', subnetwork: subnet.id },
      parent,
    );
    // TLS inside the VPC: a CA of this stack, and the node's certificate for its internal address
    // (what the clients connect to). The VM reads its key from Secret Manager at boot; the clients
    // get the CA certificate (OPENSEARCH_CA_CERT) and trust nothing else for this cluster.
    const caKey = new tls.PrivateKey(`${name}-ca-key`, { algorithm: 'ECDSA', ecdsaCurve: 'P256' }, parent);
    const caCert = new tls.SelfSignedCert(
      `${name}-ca`,
      {
        privateKeyPem: caKey.privateKeyPem,
        isCaCertificate: true,
        validityPeriodHours: 10 * 365 * 24,
        allowedUses: ['cert_signing', 'crl_signing'],
        subject: { commonName: `${args.prefix} OpenSearch CA`, organization: 'image-semantic-search' },
      },
      parent,
    );
    const nodeKey = new tls.PrivateKey(`${name}-node-key`, { algorithm: 'RSA', rsaBits: 2048 }, parent);
    const nodeRequest = new tls.CertRequest(
      `${name}-node-csr`,
      { privateKeyPem: nodeKey.privateKeyPem, subject: { commonName: `${args.prefix}-opensearch` }, ipAddresses: [address.address] },
      parent,
    );
    const nodeCert = new tls.LocallySignedCert(
      `${name}-node-cert`,
      {
        certRequestPem: nodeRequest.certRequestPem,
        caPrivateKeyPem: caKey.privateKeyPem,
        caCertPem: caCert.certPem,
        validityPeriodHours: 10 * 365 * 24,
        allowedUses: ['digital_signature', 'key_encipherment', 'server_auth'],
      },
      parent,
    );
    const caSecret = secret('ca', `${args.prefix}-opensearch-ca`, caCert.certPem);
    // OpenSearch reads PKCS#8 keys only.
    const keySecret = secret('tls-key', `${args.prefix}-opensearch-tls-key`, nodeKey.privateKeyPemPkcs8);
    const certSecret = secret('tls-cert', `${args.prefix}-opensearch-tls-cert`, nodeCert.certPem);
    const tlsReaders = [caSecret, keySecret, certSecret].map((sec, i) =>
      grantOnSecret(`${name}-vm-tls-accessor-${i}`, args.project, sec.secretId, { role: 'roles/secretmanager.secretAccessor', member }, parent),
    );

    const disk = new gcp.compute.Disk(
      `${name}-data`,
      { project: args.project, zone, name: `${args.prefix}-opensearch-data`, type: 'pd-balanced', size: s.diskSizeGb, labels: args.labels },
      parent,
    );

    const registryHost = `${args.region}-docker.pkg.dev`;
    const startupScript = pulumi
      .all([passwordSecret.secretId, dockerHub.repositoryId, keySecret.secretId, certSecret.secretId, caSecret.secretId])
      .apply(([passwordSecretId, repo, keySecretId, certSecretId, caSecretId]) =>
        opensearchStartupScript({
          project: args.project,
          passwordSecretId,
          tls: { keySecretId, certSecretId, caSecretId },
          image: `${registryHost}/${args.project}/${repo}/${s.image.includes('/') ? s.image : `library/${s.image}`}`,
          registryHost,
          heap: s.heap,
          dataDeviceName: DATA_DEVICE,
        }),
      );

    const instance = new gcp.compute.Instance(
      `${name}-vm`,
      {
        project: args.project,
        zone,
        name: `${args.prefix}-opensearch`,
        machineType: s.machineType,
        tags: [OPENSEARCH_TAG],
        labels: args.labels,
        bootDisk: { initializeParams: { image: 'cos-cloud/cos-stable', size: 20, type: 'pd-balanced' } },
        attachedDisks: [{ source: disk.id, deviceName: DATA_DEVICE, mode: 'READ_WRITE' }],
        // No accessConfigs: the VM gets no external IP.
        networkInterfaces: [{ subnetwork: subnet.id, networkIp: address.address }],
        metadata: { 'startup-script': startupScript, 'google-logging-enabled': 'true', 'enable-oslogin': 'TRUE' },
        serviceAccount: { email: account.email, scopes: ['cloud-platform'] },
        shieldedInstanceConfig: { enableSecureBoot: true, enableVtpm: true, enableIntegrityMonitoring: true },
        allowStoppingForUpdate: true,
      },
      {
        ...parent,
        dependsOn: [passwordSecret.latest, canReadPassword, canPull, firewall, ...tlsReaders, caSecret.latest, keySecret.latest, certSecret.latest],
      },
    );

    return { network, subnet, connector, firewall, address, instance, caSecret };
  }
}
