import { promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { generate } from 'selfsigned';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { ConfigError } from '../../shared/errors.js';
import { ChecksumMismatchError, CLIP_VIT_B32, DownloadError, pullClip, type ClipSource } from '../../shared/services/model-pull.js';
import { runCli } from '../helpers/cli.js';
import { tinyClipFiles, tinyClipSha } from '../helpers/tiny-clip.js';

/**
 * Issue 11 point 6: `model pull --from URL` against a real HTTPS server (a certificate made for
 * 127.0.0.1 in this test, trusted by the client through undici's Agent, as the global fetch is
 * built on undici): HTTPS only, same-host redirects, a size cap, a body idle timeout, SHA-256
 * checked, and a cache keyed by content hash that a bad download never poisons.
 */
type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let server: Server;
let base: string;
let handler: Handler;
let requests: { url: string; authorization?: string }[];
let trustingFetch: typeof fetch;
let agent: Agent;
const open = new Set<ServerResponse>();

beforeAll(async () => {
  const pems = await generate([{ name: 'commonName', value: '127.0.0.1' }], {
    keyType: 'ec',
    curve: 'P-256',
    extensions: [
      {
        name: 'subjectAltName',
        altNames: [
          { type: 7, ip: '127.0.0.1' },
          { type: 2, value: 'localhost' },
        ],
      },
    ],
  });
  server = createServer({ key: pems.private, cert: pems.cert }, (req, res) => {
    requests.push({ url: req.url!, authorization: req.headers.authorization });
    open.add(res);
    res.on('close', () => open.delete(res));
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  agent = new Agent({ connect: { ca: pems.cert } });
  trustingFetch = ((input: string | URL, init?: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher: agent })) as unknown as typeof fetch;
});
afterAll(async () => {
  await agent.close();
  await new Promise((resolve) => server.close(resolve));
});

let work: string;
let registry: LocalModelRegistry;
beforeEach(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-pull-'));
  registry = new LocalModelRegistry(path.join(work, 'registry'));
  requests = [];
  handler = serveFiles(tinyClipFiles);
});
afterEach(async () => {
  for (const res of open) res.destroy();
  await fs.rm(work, { recursive: true, force: true });
});

/** Serves the canonical file names under `/m/`, 404 otherwise. */
function serveFiles(files: Record<string, Buffer>, prefix = '/m/'): Handler {
  return (req, res) => {
    const name = req.url!.startsWith(prefix) ? req.url!.slice(prefix.length) : '';
    const body = files[name];
    if (!body) return void res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-length': body.length }).end(body);
  };
}

const cacheDir = () => path.join(work, 'cache');
const source = (over: Partial<ClipSource> = {}): ClipSource => ({
  url: `${base}/m/`,
  cacheDir: cacheDir(),
  fetch: trustingFetch,
  sha256: tinyClipSha,
  limits: { headersTimeoutMs: 5_000, idleTimeoutMs: 500 },
  ...over,
});

/** Every file left in the cache (temp files included). */
async function cacheFiles(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(path.join(dir, e.name));
      else out.push(path.relative(cacheDir(), path.join(dir, e.name)));
    }
  };
  await walk(cacheDir());
  return out.sort();
}

describe('model pull --from https://mirror', () => {
  it('downloads over HTTPS, checks each SHA-256, caches by hash, registers', async () => {
    const result = await pullClip(registry, source());
    expect(result.registered).toBe(true);
    expect(requests.map((r) => r.url).sort()).toEqual(
      Object.keys(CLIP_VIT_B32.urls)
        .map((n) => `/m/${n}`)
        .sort(),
    );
    expect(await cacheFiles()).toEqual(
      Object.entries(tinyClipSha)
        .map(([name, hex]) => path.join('sha256', hex, name))
        .sort(),
    );
  });

  it('refuses plain HTTP before any request', async () => {
    const attempt = pullClip(registry, source({ url: `${base.replace('https:', 'http:')}/m/` }));
    await expect(attempt).rejects.toThrow(ConfigError);
    await expect(attempt).rejects.toThrow(/only https:\/\/ mirrors are accepted/);
    expect(requests).toEqual([]);
    expect(await registry.list()).toEqual([]);
  });

  it('follows a redirect on the same host', async () => {
    const files = serveFiles(tinyClipFiles, '/real/');
    handler = (req, res) => (req.url!.startsWith('/m/') ? void res.writeHead(302, { location: req.url!.replace('/m/', '/real/') }).end() : files(req, res));
    expect((await pullClip(registry, source())).registered).toBe(true);
  });

  it('refuses a redirect to another host (nothing cached or registered)', async () => {
    const other = base.replace('127.0.0.1', 'localhost');
    handler = (req, res) => void res.writeHead(302, { location: `${other}/elsewhere${req.url}` }).end();
    const attempt = pullClip(registry, source());
    await expect(attempt).rejects.toThrow(DownloadError);
    await expect(attempt).rejects.toThrow(/redirects to another host \(localhost:\d+\): refused/);
    expect(requests.every((r) => !r.url.startsWith('/elsewhere'))).toBe(true);
    expect(await cacheFiles()).toEqual([]);
    expect(await registry.list()).toEqual([]);
  });

  it.each([
    ['with a Content-Length', true],
    ['streamed without one', false],
  ])('refuses a body over the size cap (%s), leaving no partial file', async (_what, declared) => {
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    handler = (_req, res) => {
      res.writeHead(200, declared ? { 'content-length': big.length } : {});
      res.end(big);
    };
    const attempt = pullClip(registry, source({ limits: { maxBytes: 1024 * 1024 } }));
    await expect(attempt).rejects.toThrow(DownloadError);
    await expect(attempt).rejects.toThrow(/over the cap of 1048576: refused/);
    expect(await cacheFiles()).toEqual([]);
  });

  it('fails with a clear error when the server stalls mid-body (instead of hanging)', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-length': 1000 });
      res.write(Buffer.alloc(10)); // ...and nothing more
    };
    const attempt = pullClip(registry, source());
    await expect(attempt).rejects.toThrow(/stalled: no data for 0.5 s after 10 bytes/);
    expect(await cacheFiles()).toEqual([]);
  });

  it('fails with a clear error when the server never answers', async () => {
    handler = () => undefined;
    await expect(pullClip(registry, source({ limits: { headersTimeoutMs: 300 } }))).rejects.toThrow(
      /no response from https:\/\/127\.0\.0\.1:\d+\/m\/.* within 0.3 s/,
    );
  });

  it('a corrupt download is refused and never poisons the cache: the next pull downloads again and succeeds', async () => {
    handler = serveFiles({ ...tinyClipFiles, 'text_model.onnx': Buffer.from('not the model') });
    await expect(pullClip(registry, source())).rejects.toThrow(ChecksumMismatchError);
    expect((await cacheFiles()).some((f) => f.includes('text_model'))).toBe(false);
    handler = serveFiles(tinyClipFiles);
    requests = [];
    expect((await pullClip(registry, source())).registered).toBe(true);
    // The file verified the first time (vision) came from the cache; the refused one was fetched again.
    expect(requests.map((r) => r.url)).toEqual(['/m/text_model.onnx', '/m/bpe_simple_vocab_16e6.txt.gz']);
  });

  it('checks a mirror against the pinned hashes when no --sha256 is given', async () => {
    await expect(pullClip(registry, source({ sha256: undefined }))).rejects.toThrow(
      new RegExp(`has SHA-256 ${tinyClipSha['vision_model.onnx']}, expected ${CLIP_VIT_B32.sha256['vision_model.onnx']}`),
    );
    expect(await cacheFiles()).toEqual([]);
  });

  it('credentials in the mirror URL go as an Authorization header and never into messages', async () => {
    handler = (_req, res) => void res.writeHead(404).end();
    const withCreds = `${base.replace('https://', 'https://mirror-user:S3cr3t-pw@')}/m/`;
    const err = await pullClip(registry, source({ url: withCreds })).then(
      () => null,
      (e: unknown) => e as Error & { cause?: Error },
    );
    expect(err).toBeInstanceOf(DownloadError);
    expect(requests[0]!.authorization).toBe(`Basic ${Buffer.from('mirror-user:S3cr3t-pw').toString('base64')}`);
    expect(`${err!.message} ${err!.cause?.message}`).toMatch(/HTTP 404/);
    expect(`${err!.message} ${err!.cause?.message} ${JSON.stringify(err)}`).not.toContain('S3cr3t-pw');
  });
});

describe('imgsearch model pull (the CLI)', () => {
  it('refuses --from http:// with exit 2 and says why, before opening anything', async () => {
    const result = await runCli(['model', 'pull', 'clip-vit-b32', '--from', 'http://127.0.0.1:9/m/'], {
      cwd: work,
      env: { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: path.join(work, 'bucket') },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/only https:\/\/ mirrors are accepted/);
    await expect(fs.stat(path.join(work, 'home', 'models'))).rejects.toThrow();
  }, 60_000);

  it('refuses a malformed --sha256', async () => {
    const result = await runCli(['model', 'pull', 'clip-vit-b32', '--from', `${base}/m/`, '--sha256', 'vision_model.onnx=abc'], {
      cwd: work,
      env: { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: path.join(work, 'bucket') },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--sha256 "vision_model.onnx=abc": expected <name>=<64 hex digits>/);
  }, 60_000);
});
