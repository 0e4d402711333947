import { isIP } from 'node:net';
import os from 'node:os';
import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';

/**
 * Where the app listens decides which checks apply. `local` (`imgsearch up`): the Host header must
 * name this machine (loopback names, an IP literal, the configured host) — a DNS-rebinding page
 * carries its own domain name and is refused. `cloud` (Cloud Run): the platform routes by host and
 * the service sits behind `trustedProxyHops` proxies that each append the address they were called
 * from to X-Forwarded-For: 1 = Cloud Run's front end alone; 2 = behind the public external
 * Application Load Balancer too (it sends `<client-supplied…>, <client-ip>, <lb-ip>`). The client
 * address (request.ip, the rate-limit key) is the entry that many hops back; entries the client
 * wrote itself are never used.
 */
export type NetworkMode = { mode: 'local'; host: string } | { mode: 'cloud'; trustedProxyHops: number };

/** The Host header names no host this server answers for (DNS rebinding): 421. */
export class MisdirectedRequestError extends AppError {
  override readonly code = 'HOST_NOT_ALLOWED';
  readonly statusCode = 421;
}

/** A state-changing request sent by another site's page (CSRF): 403. */
export class CrossSiteRequestError extends AppError {
  override readonly code = 'CROSS_SITE_REQUEST';
  readonly statusCode = 403;
}

/** Where the page sends files in the cloud: Cloud Storage's XML API, path-style signed URLs (adapters/gcp/gcs-signed-uploads.ts). */
export const SIGNED_UPLOAD_ORIGIN = 'https://storage.googleapis.com';

/**
 * Where the page PUTs signed uploads: `{ bucket }`, that bucket's path only; `true` (a caller that
 * does not pass its bucket), all of Cloud Storage — any bucket, so callers should pass the bucket.
 */
export type SignedUploadsCsp = boolean | { bucket: string };

/** Cloud Storage bucket naming (cloud.google.com/storage/docs/buckets#naming): 3–222 of a-z, 0-9, -, _, . */
const BUCKET_NAME = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;

/**
 * The connect-src source for signed uploads, or null: path-style signed URLs are
 * `https://storage.googleapis.com/<bucket>/<object>`, and a CSP source whose path ends in "/" matches
 * every path under it and nothing else (https://www.w3.org/TR/CSP3/#match-paths), so another bucket's
 * URL is refused.
 */
function signedUploadSource(signedUploads: SignedUploadsCsp | undefined): string | null {
  if (!signedUploads) return null;
  if (signedUploads === true) return SIGNED_UPLOAD_ORIGIN;
  if (!BUCKET_NAME.test(signedUploads.bucket)) {
    throw new Error(
      `invalid bucket name ${JSON.stringify(signedUploads.bucket)} for the page's CSP: Cloud Storage bucket names are 3-222 of a-z, 0-9, -, _, .`,
    );
  }
  return `${SIGNED_UPLOAD_ORIGIN}/${signedUploads.bucket}/`;
}

/**
 * The CSP the page works under (web/: one module script, one stylesheet, thumbnails and fetches
 * on its own origin, no inline code): nothing from elsewhere, never framed. With signed uploads
 * (the cloud service) the page may also connect to the images bucket on Cloud Storage, where it PUTs each file.
 */
export function contentSecurityPolicy(options: { signedUploads?: SignedUploadsCsp } = {}): Record<string, string[]> {
  const upload = signedUploadSource(options.signedUploads);
  return {
    'default-src': ["'self'"],
    'script-src': ["'self'"],
    'style-src': ["'self'"],
    'img-src': ["'self'"],
    'connect-src': upload ? ["'self'", upload] : ["'self'"],
    'font-src': ["'self'"],
    'object-src': ["'none'"],
    'base-uri': ["'self'"],
    'form-action': ["'self'"],
    'frame-ancestors': ["'none'"],
  };
}

/**
 * @fastify/helmet options: the CSP above (no upgrade-insecure-requests: the local page is plain
 * HTTP), DENY framing, no referrer. The images bucket joins connect-src only in cloud mode with signed uploads.
 */
export function helmetOptions(network: NetworkMode, options: { signedUploads?: SignedUploadsCsp } = {}) {
  return {
    global: true,
    contentSecurityPolicy: {
      useDefaults: false,
      directives: contentSecurityPolicy({ signedUploads: network.mode === 'cloud' ? options.signedUploads : false }),
    },
    frameguard: { action: 'deny' as const },
    referrerPolicy: { policy: 'no-referrer' as const },
    // HSTS only where the service is reached over HTTPS (Cloud Run); meaningless on local HTTP.
    hsts: network.mode === 'cloud',
  };
}

/** `example.org:8080` → `example.org`; `[::1]:80` → `::1`; lower case. */
export function hostnameOf(hostHeader: string): string {
  const h = hostHeader.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') === -1 ? undefined : h.indexOf(']'));
  const colon = h.lastIndexOf(':');
  return colon === -1 || h.indexOf(':') !== colon ? h : h.slice(0, colon);
}

export function isLoopbackAddress(address: string): boolean {
  const a = address.replace(/^::ffff:/, '');
  return a === '::1' || a === 'localhost' || (isIP(a) === 4 && a.startsWith('127.'));
}

/**
 * Host names this server answers for: any IP literal (a DNS-rebinding attack needs a name it
 * controls), `localhost` and `*.localhost`, the configured host; bound to every interface, also
 * this machine's own name (and `<name>.local`).
 */
export function hostAllowed(hostname: string, configuredHost: string): boolean {
  if (isIP(hostname) !== 0) return true;
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) return true;
  const configured = configuredHost.toLowerCase();
  if (hostname === configured) return true;
  if (configured === '0.0.0.0' || configured === '::') {
    const me = os.hostname().toLowerCase();
    return hostname === me || hostname === `${me}.local`;
  }
  return false;
}

/** Refuses a request whose Host this server does not answer for (local mode only). */
export function checkHost(req: FastifyRequest, network: NetworkMode): void {
  if (network.mode !== 'local') return;
  const header = req.headers.host ?? '';
  const hostname = hostnameOf(header);
  if (!hostname || !hostAllowed(hostname, network.host)) {
    throw new MisdirectedRequestError(
      `this server does not answer for host ${JSON.stringify(header)} (DNS-rebinding protection): open it as http://127.0.0.1 or http://localhost, or the host given to --host`,
    );
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * A browser marks a request sent by another site's page. `Sec-Fetch-Site` (set by the browser,
 * never by a page's script) decides when present: `same-origin` (and `none`, a user-initiated
 * request) pass, `cross-site`/`same-site`/anything else is refused. Only a browser that sends no
 * Sec-Fetch-Site has its `Origin` compared with Host: a proxy that rewrites Host — `gcloud run
 * services proxy` on localhost:8080 sends the run.app host with the browser's
 * `Origin: http://localhost:8080` — would otherwise refuse the page's own POSTs. Plain form posts
 * (multipart, no preflight) are refused that way; clients that send neither (curl, scripts) pass.
 */
export function checkSameOrigin(req: FastifyRequest): void {
  if (SAFE_METHODS.has(req.method)) return;
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined) {
    if (site === 'same-origin' || site === 'none') return;
    throw new CrossSiteRequestError(`cross-site ${req.method} refused (Sec-Fetch-Site: ${String(site)}): use the page served by this server`);
  }
  const origin = req.headers.origin;
  if (origin === undefined) return;
  const host = req.headers.host;
  let originHost: string | null = null;
  try {
    originHost = new URL(origin).host.toLowerCase();
  } catch {
    // "null" (an opaque origin: sandboxed frame, file:, redirect) or not a URL: no host to match.
  }
  if (!host || originHost !== host.toLowerCase()) {
    throw new CrossSiteRequestError(`cross-origin ${req.method} from ${JSON.stringify(origin)} refused: use the page served by this server`);
  }
}

/** The warning logged when `imgsearch up` listens on a non-loopback address, or null. */
export function exposureWarning(address: string, port: number): string | null {
  if (isLoopbackAddress(address)) return null;
  return (
    `the search page and API listen on ${address}:${port}, reachable from other machines, with no authentication: ` +
    'anyone who can reach this port can search, list every indexed image with its name and thumbnail, read /api/status ' +
    '(file paths, rejected files) and post feedback. Use --host 127.0.0.1 (the default) unless this network is trusted.'
  );
}
