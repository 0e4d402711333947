import { ParseError } from '../../errors.js';
import type { VectorDocument } from '../../ports/vector-index.js';
import { VECTOR_FIELD } from './index-body.js';

/** OpenSearch versions are Java longs. */
const LONG_MAX = 9223372036854775807n;

/** A generation usable as an external version: decimal int64 string, 0 ≤ g ≤ 2^63−1. */
export function checkGeneration(id: string, generation: string): string {
  if (!/^\d{1,19}$/.test(generation) || BigInt(generation) > LONG_MAX) {
    throw new ParseError(`Document ${id}: generation ${JSON.stringify(generation)} is not an int64 decimal string (0 to ${LONG_MAX})`);
  }
  return BigInt(generation).toString();
}

/** The document's source as stored; the vector field is absent on tombstones. */
export interface StoredSource {
  id: string;
  uri?: string;
  name?: string;
  generation: string | number;
  modelVersion?: string;
  vector?: number[];
  labels?: string[];
  caption?: string;
  contentType?: string;
  width?: number;
  height?: number;
  eventTime?: string;
  indexedAt?: string;
  deleted?: boolean;
}

/** Object name of a URI: `gs://bucket/a/b.jpg` → `a/b.jpg`; `file:///x/y.jpg` → `/x/y.jpg`. */
export function objectNameOf(uri: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)\/(.*)$/i.exec(uri);
  if (!m) return uri;
  return m[1]!.toLowerCase() === 'file' ? `/${m[3]}` : m[3]!;
}

/**
 * One document's JSON. The vector is written with 9 significant digits (enough to round-trip a
 * float32): bulk bodies a third smaller than float64 digits, and 4× faster to write (512-d: 7.3 kB, 0.5 ms per doc).
 */
export function encodeDocument(doc: VectorDocument, generation: string): string {
  const source: Omit<StoredSource, 'vector'> & { vector: string } = {
    id: doc.id,
    uri: doc.uri,
    name: objectNameOf(doc.uri),
    generation,
    modelVersion: doc.modelVersion,
    vector: '\u0000VECTOR\u0000',
    labels: doc.labels,
    caption: doc.caption,
    contentType: doc.contentType,
    width: doc.width,
    height: doc.height,
    eventTime: doc.eventTime,
    indexedAt: doc.indexedAt,
    deleted: false,
  };
  const vector = `[${Array.from(doc.vector, (x) => x.toPrecision(9)).join(',')}]`;
  return JSON.stringify(source).replace('"\\u0000VECTOR\\u0000"', vector);
}

export function encodeTombstone(id: string, generation: string, modelVersion: string, at: string): string {
  const source: StoredSource = { id, generation, modelVersion, indexedAt: at, deleted: true };
  return JSON.stringify(source);
}

/** Bulk action line; the version is written as a raw number so int64 keeps every digit. */
export function actionLine(index: string, id: string, generation: string, versionType: 'external' | 'external_gte'): string {
  return `{"index":{"_index":${JSON.stringify(index)},"_id":${JSON.stringify(id)},"version":${generation},"version_type":"${versionType}"}}`;
}

export function decodeDocument(source: StoredSource): VectorDocument {
  const vector = source[VECTOR_FIELD];
  return {
    id: source.id,
    uri: source.uri ?? '',
    generation: String(source.generation),
    modelVersion: source.modelVersion ?? '',
    vector: Float32Array.from(vector ?? []),
    labels: source.labels ?? [],
    ...(source.caption !== undefined ? { caption: source.caption } : {}),
    ...(source.contentType !== undefined ? { contentType: source.contentType } : {}),
    ...(source.width !== undefined ? { width: source.width } : {}),
    ...(source.height !== undefined ? { height: source.height } : {}),
    ...(source.eventTime !== undefined ? { eventTime: source.eventTime } : {}),
    indexedAt: source.indexedAt ?? '',
  };
}

/** Splits NDJSON operations (each one or two lines) into bodies of at most `maxBytes`. */
export function batchByBytes<T extends { body: string }>(ops: T[], maxBytes: number): T[][] {
  const batches: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const op of ops) {
    const bytes = Buffer.byteLength(op.body);
    if (current.length > 0 && size + bytes > maxBytes) {
      batches.push(current);
      current = [];
      size = 0;
    }
    current.push(op);
    size += bytes;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}
