import { randomBytes } from 'node:crypto';
import { AppError, NotFoundError, ParseError } from '../../errors.js';
import type { BlobStore } from '../../ports/blob-store.js';

/**
 * Embedding shards carry a batch's vectors "by reference": the embed job writes one shard per
 * batch and publishes small messages with `vectorRef: { shard, row }` instead of 512 floats each.
 * Layout: one JSON header line, then `rows × dimension` little-endian float32 (raw, since floats
 * barely compress). A shard is immutable once written.
 */
const FORMAT = 'iss-embeddings/1';
const HEADER_LIMIT = 4096;

export interface EmbeddingShardRef {
  shard: string;
  row: number;
}

interface Header {
  format: string;
  dimension: number;
  rows: number;
  createdAt: string;
}

export function encodeEmbeddingShard(vectors: Float32Array[]): Buffer {
  if (vectors.length === 0) throw new AppError('An embedding shard needs at least one vector');
  const dimension = vectors[0]!.length;
  if (dimension === 0) throw new AppError('Embedding vectors must not be empty');
  const body = Buffer.alloc(vectors.length * dimension * 4);
  vectors.forEach((v, row) => {
    if (v.length !== dimension) {
      throw new AppError(`Vector ${row} has dimension ${v.length}, expected ${dimension} like the first one`);
    }
    for (let i = 0; i < dimension; i += 1) body.writeFloatLE(v[i]!, (row * dimension + i) * 4);
  });
  const header: Header = { format: FORMAT, dimension, rows: vectors.length, createdAt: new Date().toISOString() };
  return Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), body]);
}

export function decodeEmbeddingShard(data: Buffer, name = 'shard'): Float32Array[] {
  const newline = data.subarray(0, HEADER_LIMIT).indexOf(0x0a);
  if (newline < 0) throw new ParseError(`${name} is not an embedding shard (no header line)`);
  let header: Header;
  try {
    header = JSON.parse(data.subarray(0, newline).toString('utf8')) as Header;
  } catch (err) {
    throw new ParseError(`${name} has an unreadable header`, { cause: err });
  }
  if (header.format !== FORMAT || !Number.isInteger(header.dimension) || !Number.isInteger(header.rows)) {
    throw new ParseError(`${name} is not an ${FORMAT} shard (header ${JSON.stringify(header).slice(0, 200)})`);
  }
  const body = data.subarray(newline + 1);
  if (body.length !== header.rows * header.dimension * 4) {
    throw new ParseError(`${name} is truncated: ${body.length} bytes for ${header.rows}×${header.dimension} floats`);
  }
  const rows: Float32Array[] = [];
  for (let r = 0; r < header.rows; r += 1) {
    const v = new Float32Array(header.dimension);
    for (let i = 0; i < header.dimension; i += 1) v[i] = body.readFloatLE((r * header.dimension + i) * 4);
    rows.push(v);
  }
  return rows;
}

/** Writes the vectors as one new shard under `prefix`; message i refers to `{ shard, row: i }`. */
export async function writeEmbeddingShard(
  blobs: BlobStore,
  vectors: Float32Array[],
  options: { prefix?: string } = {},
): Promise<{ shard: string; rows: number; refs: EmbeddingShardRef[] }> {
  const prefix = (options.prefix ?? 'embeddings/shards').replace(/\/+$/, '');
  const shard = `${prefix}/${Date.now().toString().padStart(15, '0')}-${randomBytes(6).toString('hex')}.f32`;
  await blobs.write(shard, encodeEmbeddingShard(vectors), { contentType: 'application/octet-stream' });
  return { shard, rows: vectors.length, refs: vectors.map((_, row) => ({ shard, row })) };
}

/** One vector by reference (reads the whole shard; use {@link EmbeddingShardReader} for many). */
export async function readEmbeddingShard(blobs: BlobStore, ref: EmbeddingShardRef): Promise<Float32Array> {
  return new EmbeddingShardReader(blobs, 1).read(ref);
}

/**
 * Resolves many refs while reading each shard once: an upsert batch of 500 messages usually
 * points into one or two shards. Keeps the `capacity` most recently used shards decoded.
 */
export class EmbeddingShardReader {
  private readonly cache = new Map<string, Promise<Float32Array[]>>();

  constructor(
    private readonly blobs: BlobStore,
    private readonly capacity = 4,
  ) {}

  async read(ref: EmbeddingShardRef): Promise<Float32Array> {
    if (!ref.shard || !Number.isInteger(ref.row) || ref.row < 0) {
      throw new AppError(`Invalid vector reference ${JSON.stringify(ref)}: needs a shard name and a row ≥ 0`);
    }
    const rows = await this.shard(ref.shard);
    const vector = rows[ref.row];
    if (!vector) throw new NotFoundError(`Row ${ref.row} is past the end of ${ref.shard} (${rows.length} rows)`, { meta: { ...ref } });
    return vector;
  }

  private shard(name: string): Promise<Float32Array[]> {
    let pending = this.cache.get(name);
    if (pending) {
      this.cache.delete(name);
    } else {
      pending = this.blobs.read(name).then((data) => decodeEmbeddingShard(data, name));
      pending.catch(() => this.cache.delete(name));
    }
    this.cache.set(name, pending);
    while (this.cache.size > this.capacity) this.cache.delete(this.cache.keys().next().value!);
    return pending;
  }
}
