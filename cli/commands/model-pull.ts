import { createHash } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { ConfigError, errorMessage, NotFoundError } from '../../shared/errors.js';
import { modelManifestSchema, type ModelManifest } from '../../shared/model/manifest.js';
import type { ModelRegistry } from '../../shared/ports/model-registry.js';
import { ClipTokenizer } from '../../shared/text/clip-tokenizer.js';
import { configFrom, printJson } from '../options.js';
import { openLocalRuntime } from '../runtime.js';

/**
 * `imgsearch model pull clip-vit-b32`: a CLIP image + text tower as ONNX, registered (not
 * promoted). Sources: the public files below, a mirror URL serving the same names, or a folder
 * (offline). The image tower differs from the default one, so promoting it means re-embedding.
 */
export const CLIP_VIT_B32 = {
  name: 'clip-vit-b32',
  /** Accepted file names, canonical first. */
  image: ['vision_model.onnx', 'image.onnx'],
  text: ['text_model.onnx', 'text.onnx'],
  merges: ['bpe_simple_vocab_16e6.txt.gz', 'bpe_simple_vocab.txt.gz', 'merges.txt'],
  urls: {
    'vision_model.onnx': 'https://huggingface.co/Xenova/clip-vit-base-patch32/resolve/main/onnx/vision_model.onnx',
    'text_model.onnx': 'https://huggingface.co/Xenova/clip-vit-base-patch32/resolve/main/onnx/text_model.onnx',
    'bpe_simple_vocab_16e6.txt.gz': 'https://openaipublic.azureedge.net/clip/bpe_simple_vocab_16e6.txt.gz',
  } as Record<string, string>,
  // OpenAI CLIP preprocessing (ViT-B/32): 224×224 centre crop, these channel statistics.
  side: 224,
  mean: [0.48145466, 0.4578275, 0.40821073] as [number, number, number],
  std: [0.26862954, 0.26130258, 0.27577711] as [number, number, number],
  contextLength: 77,
};

const HOW_TO_GET = () =>
  `download ${Object.entries(CLIP_VIT_B32.urls).map(([f, u]) => `${f} (${u})`).join(', ')} into one folder, then run \`imgsearch model pull clip-vit-b32 --from <folder>\` (or --from <base URL> of a mirror serving those file names)`;

async function firstExisting(dir: string, names: string[]): Promise<string> {
  for (const name of names) {
    const file = path.join(dir, name);
    if (await fs.stat(file).then((s) => s.isFile(), () => false)) return file;
  }
  throw new NotFoundError(`${dir} has none of ${names.join(', ')}; ${HOW_TO_GET()}`);
}

async function download(url: string, file: string): Promise<void> {
  const controller = new AbortController();
  // Only the wait for response headers is bounded: a 350 MB body may legitimately take minutes.
  const timer = setTimeout(() => controller.abort(), 30_000);
  let res: Response;
  try {
    res = await fetch(url, { signal: controller.signal, redirect: 'follow' });
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status}`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await pipeline(Readable.fromWeb(res.body as never), createWriteStream(`${file}.part`));
  await fs.rename(`${file}.part`, file);
}

/** Downloads the canonical files from `base` (or the public URLs) into `cacheDir`; returns the folder. */
async function fetchFiles(cacheDir: string, base: string | undefined, log: (s: string) => void): Promise<string> {
  for (const [name, url] of Object.entries(CLIP_VIT_B32.urls)) {
    const file = path.join(cacheDir, name);
    if (await fs.stat(file).then(() => true, () => false)) continue;
    const from = base ? `${base.replace(/\/+$/, '')}/${name}` : url;
    log(`downloading ${from}`);
    try {
      await download(from, file);
    } catch (err) {
      throw new ConfigError(`cannot download ${from}: ${errorMessage(err)}. Without internet access, ${HOW_TO_GET()}`, { cause: err });
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
      throw new ConfigError(`${files.text} must take token ids only, it takes ${text.inputNames.join(', ')} (use an export of CLIPTextModelWithProjection with input_ids as its only input)`);
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
      ((await image.run({ [image.inputNames[0]!]: new ort.Tensor('float32', new Float32Array(3 * height * width), [1, 3, height, width]) }))[imageOut]!.dims[1] as number);
    const tokenizer = await ClipTokenizer.fromFile(files.merges);
    const ids = tokenizer.tokenize(['a photo'], contextLength);
    const textDim = (await text.run({ [text.inputNames[0]!]: new ort.Tensor('int64', ids, [1, contextLength]) }))[textOut]!.dims[1] as number;
    if (imageDim !== textDim) throw new ConfigError(`image embeddings have ${imageDim} dimensions but text embeddings ${textDim}: not the two towers of one CLIP model`);
    return modelManifestSchema.parse({
      name: CLIP_VIT_B32.name,
      version,
      description: 'CLIP ViT-B/32 image and text towers (ONNX); promoting it re-embeds every image',
      image: { file: path.basename(files.image), inputName: image.inputNames[0], outputName: imageOut, width, height, layout: 'NCHW', scale: 1 / 255, mean: CLIP_VIT_B32.mean, std: CLIP_VIT_B32.std, resize: 'cover', dimension: imageDim },
      text: { kind: 'clip', file: path.basename(files.text), tokenizerFile: path.basename(files.merges), inputName: text.inputNames[0], outputName: textOut, contextLength, dimension: textDim },
      dimension: imageDim,
      normalize: true,
    });
  } finally {
    await image.release();
    await text.release();
  }
}

export async function pullClip(registry: ModelRegistry, source: { dir?: string; url?: string; cacheDir: string }, log: (s: string) => void = () => {}) {
  const dir = source.dir ?? (await fetchFiles(source.cacheDir, source.url, log));
  if (source.dir && !(await fs.stat(dir).then((s) => s.isDirectory(), () => false))) throw new NotFoundError(`--from ${dir} is not a folder`);
  const files = { image: await firstExisting(dir, CLIP_VIT_B32.image), text: await firstExisting(dir, CLIP_VIT_B32.text), merges: await firstExisting(dir, CLIP_VIT_B32.merges) };
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
    files: { [manifest.image.file]: bytes.image, [manifest.text!.file]: bytes.text, [(manifest.text as { tokenizerFile: string }).tokenizerFile]: bytes.merges },
    lineage: { source: source.dir ? `folder ${path.resolve(source.dir)}` : (source.url ?? 'public CLIP ViT-B/32 ONNX export'), baseModel: CLIP_VIT_B32.name },
  });
  return { version, registered: true, manifest };
}

export function registerModelPullCommand(model: Command): void {
  model
    .command('pull')
    .argument('<name>', 'model to fetch: clip-vit-b32')
    .description('fetch an ONNX CLIP (image + text towers + BPE merges) and register it (not promoted: `imgsearch model promote <version>` re-embeds and switches)')
    .option('--from <dirOrUrl>', 'a folder holding the files (offline), or a mirror base URL')
    .option('--json', 'print {version, registered, manifest}')
    .action(async (name: string, opts: { from?: string; json?: boolean }, command: Command) => {
      if (name !== CLIP_VIT_B32.name) throw new NotFoundError(`unknown model ${name}; available: ${CLIP_VIT_B32.name}`);
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        const isUrl = opts.from !== undefined && /^https?:\/\//.test(opts.from);
        const result = await pullClip(
          runtime.registry,
          { dir: opts.from && !isUrl ? opts.from : undefined, url: isUrl ? opts.from : undefined, cacheDir: path.join(runtime.config.paths.cache, 'downloads', name) },
          (s) => process.stderr.write(`${s}\n`),
        );
        if (opts.json) return printJson(result);
        process.stdout.write(
          `${result.registered ? 'registered' : 'already registered:'} ${result.version} (${result.manifest.dimension}-d image and text embeddings)\n` +
            `activate with \`imgsearch model promote ${result.version}\` (every image is re-embedded by the new image tower)\n`,
        );
      } finally {
        await runtime.close();
      }
    });
}
