import { readFileSync } from 'node:fs';
import { Client } from '@opensearch-project/opensearch';
import { z } from 'zod';
import { ConfigError, errorMessage } from '../../errors.js';
import { describeIssues } from '../../validation.js';

export interface OpenSearchConnectionOptions {
  url: string;
  username?: string;
  password?: string;
  /** PEM file of the CA that signed the cluster's certificate. */
  caFile?: string;
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
  requestTimeoutMs: z.number().int().min(100).max(600_000).default(30_000),
});

/**
 * Words that must never reach a log line or an error message. Registered by every client this
 * module creates, so that {@link redact} can scrub messages that came from the driver or the
 * network stack without knowing where they were built.
 */
const secrets = new Set<string>();

function rememberSecret(value: string | undefined): void {
  if (value && value.length >= 3) secrets.add(value);
}

/** Removes credentials from a message: known secrets, `user:pass@` in URLs, Authorization values. */
export function redact(text: string): string {
  let out = text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s:@]+(?::[^/\s@]*)?@/gi, '$1***@');
  out = out.replace(/(authorization["']?\s*[:=]\s*["']?)(basic|bearer)\s+[A-Za-z0-9+/=._-]+/gi, '$1$2 ***');
  for (const secret of secrets) {
    out = out.split(secret).join('***');
    out = out.split(encodeURIComponent(secret)).join('***');
  }
  return out;
}

/** The URL with any `user:pass@` removed, for messages. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return redact(url);
  }
}

/**
 * A client for one cluster: basic auth from options (or from `user:pass@` in the URL), TLS
 * trusting `caFile` when given. Retries are off in the driver: the adapter retries itself with
 * backoff and jitter, on 429 too (the driver never retries a 429), and per failed bulk item.
 */
export function createOpenSearchClient(options: OpenSearchConnectionOptions): Client {
  const parsed = connectionSchema.safeParse(options);
  if (!parsed.success) {
    throw new ConfigError(redact(`Invalid OpenSearch connection settings:\n${describeIssues(parsed.error, { list: true })}`), { cause: parsed.error });
  }
  const opts = parsed.data;
  const url = new URL(opts.url);
  const username = opts.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = opts.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  rememberSecret(password);
  url.username = '';
  url.password = '';
  if (password !== undefined && username === undefined) {
    throw new ConfigError('OpenSearch password is set without a username: set OPENSEARCH_USERNAME too');
  }

  let ca: Buffer | undefined;
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
