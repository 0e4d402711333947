import { readFileSync } from 'node:fs';
import { Client } from '@opensearch-project/opensearch';
import { z } from 'zod';
import { ConfigError, errorMessage } from '../../errors.js';
import { redactSecrets, registerSecret } from '../../redact.js';
import { describeIssues } from '../../validation.js';

export interface OpenSearchConnectionOptions {
  url: string;
  username?: string;
  password?: string;
  /** PEM file of the CA that signed the cluster's certificate. */
  caFile?: string;
  /** The same CA as PEM text (the cloud's OPENSEARCH_CA_CERT secret: the `vm` cluster's own CA, pinned). */
  caPem?: string;
  requestTimeoutMs?: number;
}

const connectionSchema = z.object({
  url: z
    .string({ message: 'OpenSearch url is required (e.g. https://localhost:9200)' })
    .url('OpenSearch url must be a URL such as https://localhost:9200')
    .refine((u) => /^https?:$/.test(new URL(u).protocol), 'OpenSearch url must start with http:// or https://'),
  username: z.string().min(1).optional(),
  password: z.string().optional(),
  caFile: z.string().min(1).optional(),
  caPem: z.string().includes('-----BEGIN CERTIFICATE-----', { message: 'OpenSearch CA must be a PEM certificate (-----BEGIN CERTIFICATE-----)' }).optional(),
  requestTimeoutMs: z.number().int().min(100).max(600_000).default(30_000),
});

/**
 * Messages from the driver or the network stack are scrubbed by the one formatter of
 * shared/redact.ts; the password of every client created here is registered with it, so it is
 * scrubbed even where the server echoes it. Re-exported under the names this module always had.
 */
export { redactSecrets as redact, redactUrl as safeUrl } from '../../redact.js';

/**
 * A client for one cluster: basic auth from options (or from `user:pass@` in the URL), TLS
 * trusting `caFile` when given. Retries are off in the driver: the adapter retries itself with
 * backoff and jitter, on 429 too (the driver never retries a 429), and per failed bulk item.
 */
export function createOpenSearchClient(options: OpenSearchConnectionOptions): Client {
  const parsed = connectionSchema.safeParse(options);
  if (!parsed.success) {
    throw new ConfigError(redactSecrets(`Invalid OpenSearch connection settings:\n${describeIssues(parsed.error, { list: true })}`), { cause: parsed.error });
  }
  const opts = parsed.data;
  const url = new URL(opts.url);
  const username = opts.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = opts.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  registerSecret(password);
  url.username = '';
  url.password = '';
  if (password !== undefined && username === undefined) {
    throw new ConfigError('OpenSearch password is set without a username: set OPENSEARCH_USERNAME too');
  }

  let ca: Buffer | undefined = opts.caPem ? Buffer.from(opts.caPem) : undefined;
  if (opts.caFile) {
    try {
      ca = readFileSync(opts.caFile);
    } catch (err) {
      throw new ConfigError(`Cannot read the OpenSearch CA file ${opts.caFile}: ${errorMessage(err)} (set OPENSEARCH_CA_FILE to a readable PEM file)`);
    }
    if (!ca.toString('utf8').includes('-----BEGIN CERTIFICATE-----')) {
      throw new ConfigError(`The OpenSearch CA file ${opts.caFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    }
  }

  return new Client({
    node: url.toString(),
    auth: username !== undefined ? { username, password: password ?? '' } : undefined,
    ssl: ca ? { ca, rejectUnauthorized: true } : undefined,
    requestTimeout: opts.requestTimeoutMs,
    maxRetries: 0,
    suggestCompression: false,
  });
}
