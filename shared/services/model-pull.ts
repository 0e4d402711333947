import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as ort from 'onnxruntime-node';
import { ConfigError, errorMessage, AppError, NotFoundError } from '../errors.js';
import { modelManifestSchema, type ModelManifest } from '../model/manifest.js';
import type { ModelRegistry } from '../ports/model-registry.js';
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
  /** Base URL of a mirror serving the canonical file names. */
  url?: string;
  /** Where downloads are kept between runs. */
  cacheDir: string;
  /** HTTP client (tests inject one); default: the global fetch. */
  fetch?: typeof fetch;
  /**
   * Expected SHA-256 per canonical file name. Default: {@link CLIP_VIT_B32.sha256} for the public
   * files; none for a mirror (it may serve another export under the same names, as a folder may).
   */
  sha256?: Record<string, string>;
}

export interface PullResult {
  version: string;
  registered: boolean;
  manifest: ModelManifest;
}

const HOW_TO_GET = () =>
  `download ${Object.entries(CLIP_VIT_B32.urls)
    .map(([f, u]) => `${f} (${u})`)
    .join(', ')} into one folder, then run \`imgsearch model pull clip-vit-b32 --from <folder>\` (or --from <base URL> of a mirror serving those file names)`;

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

/** Streams `url` into `file` (through `<file>.part`), hashing on the way; returns the SHA-256. */
async function download(fetchFn: typeof fetch, url: string, file: string): Promise<string> {
  const controller = new AbortController();
  // Only the wait for response headers is bounded: a 350 MB body may legitimately take minutes.
  const timer = setTimeout(() => controller.abort(), 30_000);
  let res: Response;
  try {
    res = await fetchFn(url, { signal: controller.signal, redirect: 'follow' });
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status}`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const hash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(Readable.fromWeb(res.body as never), tap, createWriteStream(`${file}.part`));
  await fs.rename(`${file}.part`, file);
  return hash.digest('hex');
}

function checksumError(name: string, from: string, got: string, expected: string): ChecksumMismatchError {
  return new ChecksumMismatchError(
    `${name} from ${from} has SHA-256 ${got}, expected ${expected}: the download is corrupt or not the pinned file, so it was deleted and nothing was registered. ` +
      `Run again to retry the download; if it keeps failing, ${HOW_TO_GET()}`,
    { meta: { file: name, got, expected } },
  );
}

/**
 * Downloads the canonical files from `base` (or the public URLs) into `cacheDir`, checking each
 * against `expected` (a cached file too, so a truncated or tampered cache is fetched again).
 */
async function fetchFiles(
  cacheDir: string,
  options: { base?: string; fetch: typeof fetch; expected: Record<string, string> },
  log: (s: string) => void,
): Promise<string> {
  for (const [name, url] of Object.entries(CLIP_VIT_B32.urls)) {
    const file = path.join(cacheDir, name);
    const expected = options.expected[name];
    if (
      await fs.stat(file).then(
        () => true,
        () => false,
      )
    ) {
      if (!expected || (await sha256Of(file)) === expected) continue;
      log(`cached ${name} does not match its SHA-256; downloading it again`);
      await fs.rm(file, { force: true });
    }
    const from = options.base ? `${options.base.replace(/\/+$/, '')}/${name}` : url;
    log(`downloading ${from}`);
    let got: string;
    try {
      got = await download(options.fetch, from, file);
    } catch (err) {
      await fs.rm(`${file}.part`, { force: true });
      throw new ConfigError(`cannot download ${from}: ${errorMessage(err)}. Without internet access, ${HOW_TO_GET()}`, { cause: err });
    }
    if (expected && got !== expected) {
      await fs.rm(file, { force: true });
      throw checksumError(name, from, got, expected);
    }
  }
  return cacheDir;
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
  const dir =
    source.dir ??
    (await fetchFiles(
      source.cacheDir,
      { base: source.url, fetch: source.fetch ?? fetch, expected: source.sha256 ?? (source.url ? {} : CLIP_VIT_B32.sha256) },
      log,
    ));
  const files = {
    image: await firstExisting(dir, CLIP_VIT_B32.image),
    text: await firstExisting(dir, CLIP_VIT_B32.text),
    merges: await firstExisting(dir, CLIP_VIT_B32.merges),
  };
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
    lineage: { source: source.dir ? `folder ${path.resolve(source.dir)}` : (source.url ?? 'public CLIP ViT-B/32 ONNX export'), baseModel: CLIP_VIT_B32.name },
  });
  return { version, registered: true, manifest };
}
