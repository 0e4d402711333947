import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as ort from 'onnxruntime-node';
import { fsyncDir } from '../adapters/local/atomic-file.js';
import { ConfigError, errorMessage, AppError, NotFoundError } from '../errors.js';
import { modelManifestSchema, type ModelManifest } from '../model/manifest.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import { redactSecrets, redactUrl, registerSecret } from '../redact.js';
import { ClipTokenizer } from '../text/clip-tokenizer.js';

/**
 * A CLIP image + text tower as ONNX, registered in a model registry (not promoted). One
 * implementation for `imgsearch model pull clip-vit-b32` (cli/commands/model-pull.ts) and the
 * cloud bootstrap job (shared/services/model-bootstrap.ts). Sources: the public files below, a
 * mirror URL serving the same names, or a folder (offline). The image tower differs from the
 * default one, so promoting it means re-embedding.
 */

/** Hugging Face revision of Xenova/clip-vit-base-patch32 the ONNX files are pinned to. */
const XENOVA_REVISION = 'd15189d7028b43f1d3e65039190477f6af591c2a';
/** A commit of github.com/openai/CLIP holding clip/bpe_simple_vocab_16e6.txt.gz. */
const OPENAI_CLIP_COMMIT = 'dcba3cb2e2827b402d2701e7e1c7d9fed8a20ef1';

export const CLIP_VIT_B32 = {
  name: 'clip-vit-b32',
  /** Accepted file names, canonical first. */
  image: ['vision_model.onnx', 'image.onnx'],
  text: ['text_model.onnx', 'text.onnx'],
  merges: ['bpe_simple_vocab_16e6.txt.gz', 'bpe_simple_vocab.txt.gz', 'merges.txt'],
  // Pinned to a revision/commit, not to `main`: the bytes behind these URLs cannot change, so the
  // SHA-256 table below stays valid.
  urls: {
    'vision_model.onnx': `https://huggingface.co/Xenova/clip-vit-base-patch32/resolve/${XENOVA_REVISION}/onnx/vision_model.onnx`,
    'text_model.onnx': `https://huggingface.co/Xenova/clip-vit-base-patch32/resolve/${XENOVA_REVISION}/onnx/text_model.onnx`,
    'bpe_simple_vocab_16e6.txt.gz': `https://raw.githubusercontent.com/openai/CLIP/${OPENAI_CLIP_COMMIT}/clip/bpe_simple_vocab_16e6.txt.gz`,
  } as Record<string, string>,
  /**
   * SHA-256 of each public file. The ONNX digests are the Git LFS oids of the pinned Hugging Face
   * revision (as published by two independent projects that pin the same revision); the merges
   * digest was computed from the file in the openai/CLIP repository (unchanged since 2021).
   */
  sha256: {
    'vision_model.onnx': 'fd6e1402a588279d1723c7534d4bcba5bc0b14b47dfab0e46f8c47b8270d7d40',
    'text_model.onnx': '3f6571f5bad13a97c469c1622e1cfc4d9aef78b79fdbfcff804ca357bfada8cc',
    'bpe_simple_vocab_16e6.txt.gz': '924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a',
  } as Record<string, string>,
  /** Sizes in bytes (vision 351,685,709; text 254,058,553; merges 1,356,917). */
  bytes: { 'vision_model.onnx': 351_685_709, 'text_model.onnx': 254_058_553, 'bpe_simple_vocab_16e6.txt.gz': 1_356_917 } as Record<string, number>,
  // OpenAI CLIP preprocessing (ViT-B/32): 224×224 centre crop, these channel statistics.
  side: 224,
  mean: [0.48145466, 0.4578275, 0.40821073] as [number, number, number],
  std: [0.26862954, 0.26130258, 0.27577711] as [number, number, number],
  contextLength: 77,
};

/** A downloaded (or cached) file whose SHA-256 is not the pinned one: it is deleted, never registered. */
export class ChecksumMismatchError extends AppError {
  override readonly code = 'CHECKSUM_MISMATCH';
}

export interface ClipSource {
  /** A folder holding the files (offline): used as is, not checksummed (any CLIP-shaped export fits). */
  dir?: string;
  /**
   * Base URL of a mirror serving the canonical file names (HTTPS only). Its files are checked
   * against the pinned SHA-256 and sizes unless {@link sha256} names others.
   */
  url?: string;
  /** Where downloads are kept between runs, keyed by content hash (`<cacheDir>/sha256/<hex>/<name>`). */
  cacheDir: string;
  /** HTTP client (tests inject one); default: the global fetch. */
  fetch?: typeof fetch;
  /**
   * Expected SHA-256 per canonical file name, over the pinned table {@link CLIP_VIT_B32.sha256}
   * (a mirror serving another export under the same names gives each file's hash here). A file
   * whose hash is not the pinned one has no size check beyond {@link DownloadLimits.maxBytes}.
   */
  sha256?: Record<string, string>;
  limits?: DownloadLimits;
}

/** Bounds of one download: a slow, stalled, oversized or redirecting server fails with a clear error. */
export interface DownloadLimits {
  /** Wait for the response headers, per request (default 30 s). */
  headersTimeoutMs?: number;
  /** Longest pause between two chunks of the body (default 60 s): a stalled server fails instead of hanging. */
  idleTimeoutMs?: number;
  /** Size cap of a file whose size is not pinned (default 2 GiB); a pinned size is checked exactly. */
  maxBytes?: number;
  /** Redirects followed per file, each to the same host only (default 5). */
  maxRedirects?: number;
}

const DEFAULT_LIMITS: Required<DownloadLimits> = { headersTimeoutMs: 30_000, idleTimeoutMs: 60_000, maxBytes: 2 * 1024 ** 3, maxRedirects: 5 };

/**
 * Hosts a pinned public URL may redirect to, beside its own: Hugging Face serves its files from
 * its CDN hosts (`*.hf.co`, `cdn-lfs*.huggingface.co`). Every other redirect must stay on the
 * host asked (a mirror's redirects included). The bytes are checked against the pinned SHA-256
 * whatever host served them; this only keeps a download from wandering off.
 */
const PUBLIC_REDIRECT_HOSTS: Record<string, RegExp> = { 'huggingface.co': /^(?:[a-z0-9-]+\.)*(?:huggingface\.co|hf\.co)$/i };

export interface PullResult {
  version: string;
  registered: boolean;
  manifest: ModelManifest;
}

/** A download failed (refused URL, redirect to another host, HTTP error, timeout, size cap). Nothing was cached or registered. */
export class DownloadError extends AppError {
  override readonly code = 'DOWNLOAD_FAILED';
}

const HOW_TO_GET = () =>
  `download ${Object.entries(CLIP_VIT_B32.urls)
    .map(([f, u]) => `${f} (${u})`)
    .join(
      ', ',
    )} into one folder, then run \`imgsearch model pull clip-vit-b32 --from <folder>\` (or --from <https base URL> of a mirror serving those file names)`;

async function firstExisting(dir: string, names: string[]): Promise<string> {
  for (const name of names) {
    const file = path.join(dir, name);
    if (
      await fs.stat(file).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      return file;
  }
  throw new NotFoundError(`${dir} has none of ${names.join(', ')}; ${HOW_TO_GET()}`);
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/**
 * A mirror base URL, checked: HTTPS only (plain HTTP would let anyone on the path swap the
 * files before the hash check refuses them, and leaks credentials). Credentials in the URL
 * become a Basic Authorization header sent to that host only.
 */
export function parseMirrorUrl(raw: string): { base: URL; headers: Record<string, string> } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`--from ${redactUrl(raw)} is not a URL (use an https:// base URL of a mirror, or a folder)`);
  }
  if (url.protocol !== 'https:') {
    throw new ConfigError(
      `--from ${redactUrl(raw)}: only https:// mirrors are accepted (plain HTTP can be tampered with on the way); serve the files over HTTPS or download them into a folder`,
    );
  }
  const headers: Record<string, string> = {};
  if (url.username || url.password) {
    const password = decodeURIComponent(url.password);
    registerSecret(password);
    headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${password}`).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return { base: url, headers };
}

interface DownloadSpec {
  url: URL;
  headers: Record<string, string>;
  /** The exact size when pinned; otherwise the cap applies. */
  expectedBytes?: number;
  limits: Required<DownloadLimits>;
}

/**
 * `promise`, or after `ms` a rejection with `onTimeout()`'s error, then `abort` is called (after
 * the rejection, so the timeout's error is the one reported, not the aborted read's).
 */
async function within<T>(promise: Promise<T>, ms: number, onTimeout: () => Error, abort: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(onTimeout());
      abort();
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Streams `spec.url` into `tempFile` (created new, fsynced), hashing on the way; follows
 * redirects to the same host only (or the pinned public hosts' CDN), refuses plain HTTP, bounds
 * the wait for headers, every pause of the body and the size. Returns the SHA-256 and size.
 */
async function download(fetchFn: typeof fetch, spec: DownloadSpec, tempFile: string): Promise<{ sha256: string; bytes: number }> {
  const { limits } = spec;
  const first = spec.url;
  const redirectHosts = PUBLIC_REDIRECT_HOSTS[first.hostname];
  const controller = new AbortController();
  let current = first;
  let res: Response;
  for (let hop = 0; ; hop++) {
    if (current.protocol !== 'https:') throw new DownloadError(`${redactUrl(current.href)} is not HTTPS: refused`);
    res = await within(
      fetchFn(current, { signal: controller.signal, redirect: 'manual', headers: current.host === first.host ? spec.headers : {} }),
      limits.headersTimeoutMs,
      () => new DownloadError(`no response from ${redactUrl(current.href)} within ${limits.headersTimeoutMs / 1000} s`),
      () => controller.abort(),
    );
    if (res.status < 300 || res.status >= 400) break;
    await res.body?.cancel().catch(() => undefined);
    const location = res.headers.get('location');
    if (!location) throw new DownloadError(`${redactUrl(current.href)} answered HTTP ${res.status} without a Location`);
    const next = new URL(location, current);
    if (hop + 1 > limits.maxRedirects) throw new DownloadError(`${redactUrl(first.href)} redirected more than ${limits.maxRedirects} times`);
    if (next.protocol !== 'https:') throw new DownloadError(`${redactUrl(current.href)} redirects to ${redactUrl(next.href)}, which is not HTTPS: refused`);
    if (next.host !== first.host && !redirectHosts?.test(next.hostname)) {
      throw new DownloadError(`${redactUrl(current.href)} redirects to another host (${next.host}): refused, only redirects within ${first.host} are followed`);
    }
    current = next;
  }
  if (!res.ok || !res.body) throw new DownloadError(`GET ${redactUrl(current.href)}: HTTP ${res.status}`);
  const cap = spec.expectedBytes ?? limits.maxBytes;
  const declared = Number(res.headers.get('content-length') ?? NaN);
  const tooLarge = (n: number) =>
    new DownloadError(
      spec.expectedBytes !== undefined
        ? `${redactUrl(current.href)} sends ${n} bytes or more, but the pinned file has ${spec.expectedBytes}: refused`
        : `${redactUrl(current.href)} sends ${n} bytes or more, over the cap of ${cap}: refused`,
    );
  if (Number.isFinite(declared) && declared > cap) {
    await res.body.cancel().catch(() => undefined);
    throw tooLarge(declared);
  }
  const reader = res.body.getReader();
  const hash = createHash('sha256');
  let bytes = 0;
  const out = await fs.open(tempFile, 'wx');
  try {
    for (;;) {
      const { done, value } = await within(
        reader.read(),
        limits.idleTimeoutMs,
        () =>
          new DownloadError(
            `${redactUrl(current.href)} stalled: no data for ${limits.idleTimeoutMs / 1000} s after ${bytes} bytes (the server or the network stopped sending)`,
          ),
        () => controller.abort(),
      );
      if (done) break;
      bytes += value.byteLength;
      if (bytes > cap) {
        controller.abort();
        throw tooLarge(bytes);
      }
      hash.update(value);
      await out.write(value);
    }
    await out.sync();
  } finally {
    await out.close();
    reader.releaseLock();
  }
  return { sha256: hash.digest('hex'), bytes };
}

function checksumError(name: string, from: string, got: string, expected: string): ChecksumMismatchError {
  return new ChecksumMismatchError(
    `${name} from ${redactUrl(from)} has SHA-256 ${got}, expected ${expected}: the download is corrupt or not the pinned file, so it was deleted and nothing was registered. ` +
      `Run again to retry the download; if it keeps failing, ${HOW_TO_GET()}`,
    { meta: { file: name, got, expected } },
  );
}

/** The canonical files as SHA-256 → path in the cache (`<cacheDir>/sha256/<hex>/<name>`). */
interface FetchOptions {
  base?: { base: URL; headers: Record<string, string> };
  fetch: typeof fetch;
  expected: Record<string, string>;
  limits: Required<DownloadLimits>;
}

/**
 * Downloads each canonical file from `base` (or its public URL) unless the cache holds it, and
 * returns where each is. The cache is keyed by the expected SHA-256: a download goes to a temp
 * file, is checked (size, SHA-256), and only then renamed to `sha256/<hex>/<name>`, so a bad or
 * partial download never poisons a later pull. A cached file is checked again before use.
 */
async function fetchFiles(cacheDir: string, options: FetchOptions, log: (s: string) => void): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, publicUrl] of Object.entries(CLIP_VIT_B32.urls)) {
    const expected = options.expected[name];
    if (!expected || !/^[0-9a-f]{64}$/.test(expected)) throw new ConfigError(`no valid SHA-256 to check ${name} against (give it as ${name}=<64 hex digits>)`);
    const pinnedBytes = expected === CLIP_VIT_B32.sha256[name] ? CLIP_VIT_B32.bytes[name] : undefined;
    const file = path.join(cacheDir, 'sha256', expected, name);
    out[name] = file;
    const cached = await fs.stat(file).then(
      (s) => s.size,
      () => null,
    );
    if (cached !== null) {
      if ((pinnedBytes === undefined || cached === pinnedBytes) && (await sha256Of(file)) === expected) continue;
      log(`cached ${name} does not match its SHA-256; downloading it again`);
      await fs.rm(file, { force: true });
    }
    const url = options.base
      ? new URL(name, options.base.base.href.endsWith('/') ? options.base.base : new URL(`${options.base.base.href}/`))
      : new URL(publicUrl);
    const from = url.href;
    log(`downloading ${redactUrl(from)}`);
    await fs.mkdir(cacheDir, { recursive: true });
    const temp = path.join(cacheDir, `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.part`);
    try {
      let got: { sha256: string; bytes: number };
      try {
        got = await download(options.fetch, { url, headers: options.base?.headers ?? {}, expectedBytes: pinnedBytes, limits: options.limits }, temp);
      } catch (err) {
        throw new DownloadError(`cannot download ${redactUrl(from)}: ${redactSecrets(errorMessage(err))}. Without internet access, ${HOW_TO_GET()}`, {
          cause: err,
        });
      }
      if (got.sha256 !== expected) throw checksumError(name, from, got.sha256, expected);
      if (pinnedBytes !== undefined && got.bytes !== pinnedBytes) {
        throw new ChecksumMismatchError(`${name} from ${redactUrl(from)} has ${got.bytes} bytes, expected ${pinnedBytes}: deleted, nothing was registered`);
      }
      await writeFileAtomicRename(temp, file);
    } finally {
      await fs.rm(temp, { force: true });
    }
  }
  return out;
}

/** Moves a verified temp file to its place in the cache (directory synced: the entry survives a crash). */
async function writeFileAtomicRename(temp: string, file: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.rename(temp, file);
  await fsyncDir(path.dirname(file));
}

function staticDim(meta: ort.InferenceSession.ValueMetadata | undefined, axis: number): number | null {
  if (!meta || !meta.isTensor) return null;
  const d = meta.shape[axis];
  return typeof d === 'number' && d > 0 ? d : null;
}

/** Reads names and shapes from the ONNX files themselves, so any CLIP-shaped export fits. */
export async function clipManifestFromFiles(files: { image: string; text: string; merges: string }, version: string): Promise<ModelManifest> {
  const image = await ort.InferenceSession.create(files.image);
  const text = await ort.InferenceSession.create(files.text);
  try {
    if (image.inputNames.length !== 1) throw new ConfigError(`${files.image} must take one input (pixel values), it takes ${image.inputNames.join(', ')}`);
    if (text.inputNames.length !== 1) {
      throw new ConfigError(
        `${files.text} must take token ids only, it takes ${text.inputNames.join(', ')} (use an export of CLIPTextModelWithProjection with input_ids as its only input)`,
      );
    }
    const pick = (names: readonly string[], preferred: string) => (names.includes(preferred) ? preferred : names[0]!);
    const imageOut = pick(image.outputNames, 'image_embeds');
    const textOut = pick(text.outputNames, 'text_embeds');
    const imageIn = image.inputMetadata[0];
    const height = staticDim(imageIn, 2) ?? CLIP_VIT_B32.side;
    const width = staticDim(imageIn, 3) ?? CLIP_VIT_B32.side;
    const contextLength = staticDim(text.inputMetadata[0], 1) ?? CLIP_VIT_B32.contextLength;
    // Output widths: from the graph when static, else from one run on a blank input.
    const imageDim =
      staticDim(image.outputMetadata[image.outputNames.indexOf(imageOut)], 1) ??
      ((await image.run({ [image.inputNames[0]!]: new ort.Tensor('float32', new Float32Array(3 * height * width), [1, 3, height, width]) }))[imageOut]!
        .dims[1] as number);
    const tokenizer = await ClipTokenizer.fromFile(files.merges);
    const ids = tokenizer.tokenize(['a photo'], contextLength);
    const textDim = (await text.run({ [text.inputNames[0]!]: new ort.Tensor('int64', ids, [1, contextLength]) }))[textOut]!.dims[1] as number;
    if (imageDim !== textDim)
      throw new ConfigError(`image embeddings have ${imageDim} dimensions but text embeddings ${textDim}: not the two towers of one CLIP model`);
    return modelManifestSchema.parse({
      name: CLIP_VIT_B32.name,
      version,
      description: 'CLIP ViT-B/32 image and text towers (ONNX); promoting it re-embeds every image',
      image: {
        file: path.basename(files.image),
        inputName: image.inputNames[0],
        outputName: imageOut,
        width,
        height,
        layout: 'NCHW',
        scale: 1 / 255,
        mean: CLIP_VIT_B32.mean,
        std: CLIP_VIT_B32.std,
        resize: 'cover',
        dimension: imageDim,
      },
      text: {
        kind: 'clip',
        file: path.basename(files.text),
        tokenizerFile: path.basename(files.merges),
        inputName: text.inputNames[0],
        outputName: textOut,
        contextLength,
        dimension: textDim,
      },
      dimension: imageDim,
      normalize: true,
    });
  } finally {
    await image.release();
    await text.release();
  }
}

/**
 * Fetches (or reads) the CLIP files and registers them as `clip-vit-b32-<content hash>`; pulling
 * the same files twice is a no-op (`registered: false`). Does not promote.
 */
export async function pullClip(registry: ModelRegistry, source: ClipSource, log: (s: string) => void = () => {}): Promise<PullResult> {
  if (
    source.dir &&
    !(await fs.stat(source.dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw new NotFoundError(`--from ${source.dir} is not a folder`);
  let files: { image: string; text: string; merges: string };
  if (source.dir) {
    files = {
      image: await firstExisting(source.dir, CLIP_VIT_B32.image),
      text: await firstExisting(source.dir, CLIP_VIT_B32.text),
      merges: await firstExisting(source.dir, CLIP_VIT_B32.merges),
    };
  } else {
    const fetched = await fetchFiles(
      source.cacheDir,
      {
        base: source.url !== undefined ? parseMirrorUrl(source.url) : undefined,
        fetch: source.fetch ?? fetch,
        expected: { ...CLIP_VIT_B32.sha256, ...source.sha256 },
        limits: { ...DEFAULT_LIMITS, ...source.limits },
      },
      log,
    );
    files = { image: fetched[CLIP_VIT_B32.image[0]!]!, text: fetched[CLIP_VIT_B32.text[0]!]!, merges: fetched[CLIP_VIT_B32.merges[0]!]! };
  }
  const bytes = { image: await fs.readFile(files.image), text: await fs.readFile(files.text), merges: await fs.readFile(files.merges) };
  // Version from the content: pulling the same files twice is a no-op, different files a new version.
  const hash = createHash('sha256').update(bytes.image).update(bytes.text).update(bytes.merges).digest('hex').slice(0, 10);
  const version = `${CLIP_VIT_B32.name}-${hash}`;
  const existing = await registry.get(version);
  if (existing) return { version, registered: false, manifest: existing.manifest };
  const manifest = await clipManifestFromFiles(files, version);
  await registry.register({
    version,
    parent: null,
    manifest,
    files: {
      [manifest.image.file]: bytes.image,
      [manifest.text!.file]: bytes.text,
      [(manifest.text as { tokenizerFile: string }).tokenizerFile]: bytes.merges,
    },
    lineage: {
      source: source.dir ? `folder ${path.resolve(source.dir)}` : source.url !== undefined ? redactUrl(source.url) : 'public CLIP ViT-B/32 ONNX export',
      baseModel: CLIP_VIT_B32.name,
    },
  });
  return { version, registered: true, manifest };
}
