import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import type { ModelRegistry, ModelVersion } from '../../shared/ports/model-registry.js';
import { bootstrapModel } from '../../shared/services/model-bootstrap.js';
import { ChecksumMismatchError, CLIP_VIT_B32 } from '../../shared/services/model-pull.js';
import { strict } from '../helpers/strict-fakes.js';
import { CONTEXT, DIM, SIDE, tinyClipFiles, tinyClipSha } from '../helpers/tiny-clip.js';
import { captureLogger } from './functions-fakes.js';

/** The canonical file names served by an in-memory "internet"; records every URL asked for. */
function fakeInternet(files: Record<string, Buffer>) {
  const requested: string[] = [];
  const fetchFn = (async (input: string | URL | Request) => {
    const url = String(input);
    requested.push(url);
    const name = Object.entries(CLIP_VIT_B32.urls).find(([, u]) => u === url)?.[0];
    if (!name || !files[name]) return new Response('not found', { status: 404 });
    return new Response(new Uint8Array(files[name]), { status: 200 });
  }) as typeof fetch;
  return { fetch: fetchFn, requested };
}

let work: string;
let registry: LocalModelRegistry;
const tinyFiles = tinyClipFiles;
const tinySha = tinyClipSha;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'iss-bootstrap-'));
  registry = new LocalModelRegistry(join(work, 'registry'));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('bootstrapModel (the first model of a registry)', () => {
  it('changes nothing when a model is already active (idempotent: the job can run again)', async () => {
    const active = { version: 'm7', active: true } as ModelVersion;
    const readOnly = strict<ModelRegistry>('registry', { active: async () => active });
    const { logger } = captureLogger();
    const internet = fakeInternet({});
    expect(await bootstrapModel(readOnly, { initial: 'clip-vit-b32', cacheDir: work, logger, fetch: internet.fetch })).toEqual({
      status: 'present',
      version: 'm7',
    });
    expect(internet.requested).toEqual([]);
  });

  it('clip-vit-b32: downloads the pinned files, checks their SHA-256, registers and promotes; a second run finds it present', async () => {
    const internet = fakeInternet(tinyFiles);
    const { logger } = captureLogger();
    const result = await bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: join(work, 'cache'), logger, fetch: internet.fetch, sha256: tinySha });
    expect(result).toMatchObject({ status: 'promoted', initial: 'clip-vit-b32', registered: true });
    expect(result.version).toMatch(/^clip-vit-b32-[0-9a-f]{10}$/);
    expect(internet.requested.sort()).toEqual(Object.values(CLIP_VIT_B32.urls).sort());
    // Pinned URLs: a revision / commit, never a moving branch.
    for (const url of Object.values(CLIP_VIT_B32.urls)) expect(url).toMatch(/^https:\/\/[^/]+\/.*\/[0-9a-f]{40}\//);

    const active = await registry.active();
    expect(active).toMatchObject({
      version: result.version,
      manifest: {
        name: 'clip-vit-b32',
        dimension: DIM,
        image: { width: SIDE, height: SIDE, outputName: 'image_embeds' },
        text: { kind: 'clip', contextLength: CONTEXT },
      },
    });
    expect(await bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: join(work, 'cache'), logger, fetch: internet.fetch, sha256: tinySha })).toEqual({
      status: 'present',
      version: result.version,
    });
  });

  it('refuses a download whose SHA-256 is not the pinned one: deleted, nothing registered or promoted', async () => {
    // The tiny files are not the real CLIP files, so the built-in pinned table rejects them.
    const internet = fakeInternet(tinyFiles);
    const { logger } = captureLogger();
    const cache = join(work, 'cache');
    const attempt = bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: cache, logger, fetch: internet.fetch });
    await expect(attempt).rejects.toThrow(ChecksumMismatchError);
    await expect(attempt).rejects.toThrow(
      /has SHA-256 [0-9a-f]{64}, expected (fd6e1402|3f6571f5|924691ac)[0-9a-f]+: the download is corrupt or not the pinned file/,
    );
    expect(await registry.list()).toEqual([]);
    expect(await registry.active()).toBeNull();
    // The first file failed its check and was removed (no .part left either): nothing else was fetched.
    expect(await readdir(join(cache, 'clip-vit-b32'))).toEqual([]);
    expect(internet.requested).toEqual([CLIP_VIT_B32.urls['vision_model.onnx']]);
  });

  it('re-downloads a cached file that no longer matches its checksum', async () => {
    const { logger } = captureLogger();
    const cache = join(work, 'cache');
    const first = fakeInternet(tinyFiles);
    await bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: cache, logger, fetch: first.fetch, sha256: tinySha });
    // A second registry, same cache: nothing is downloaded again while the cache matches.
    const again = fakeInternet(tinyFiles);
    await bootstrapModel(new LocalModelRegistry(join(work, 'registry-2')), {
      initial: 'clip-vit-b32',
      cacheDir: cache,
      logger,
      fetch: again.fetch,
      sha256: tinySha,
    });
    expect(again.requested).toEqual([]);
    await writeFile(join(cache, 'clip-vit-b32', 'sha256', tinySha['text_model.onnx']!, 'text_model.onnx'), 'truncated');
    const third = fakeInternet(tinyFiles);
    await bootstrapModel(new LocalModelRegistry(join(work, 'registry-3')), {
      initial: 'clip-vit-b32',
      cacheDir: cache,
      logger,
      fetch: third.fetch,
      sha256: tinySha,
    });
    expect(third.requested).toEqual([CLIP_VIT_B32.urls['text_model.onnx']]);
  });

  it('says how to proceed without internet when a download fails', async () => {
    const { logger } = captureLogger();
    await expect(bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: join(work, 'cache'), logger, fetch: fakeInternet({}).fetch })).rejects.toThrow(
      /cannot download https:\/\/huggingface\.co\/.*HTTP 404.*imgsearch model pull clip-vit-b32 --from <folder>/,
    );
    expect(await registry.active()).toBeNull();
  });
});
