import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ParseError } from './errors.js';

/**
 * Payloads that cross process boundaries (queue, Pub/Sub, HTTP). Each is validated with zod at the
 * edge; everything inside the handlers is typed from these schemas.
 */

/** GCS generations are int64 decimal strings; local folders use the file's mtime in microseconds. */
export const generationSchema = z
  .union([z.string(), z.number().int().nonnegative()])
  .transform((g) => String(g))
  .refine((g) => /^\d{1,19}$/.test(g), { message: 'generation must be a non-negative integer (int64) string' });

export const imageEventSchema = z.object({
  bucket: z.string().min(1),
  name: z.string().min(1),
  generation: generationSchema,
  contentType: z.string().default('application/octet-stream'),
  size: z.coerce.number().int().nonnegative(),
  eventType: z.enum(['finalize', 'delete']),
  eventTime: z.string().min(1),
});
export type ImageEvent = z.infer<typeof imageEventSchema>;
export type ImageEventInput = z.input<typeof imageEventSchema>;

export const imageMetadataSchema = z.object({
  labels: z.array(z.string()).default([]),
  caption: z.string().optional(),
  contentType: z.string().optional(),
  size: z.number().optional(),
  width: z.number().optional(),
  height: z.number().optional(),
  eventTime: z.string().optional(),
});
export type ImageMetadata = z.infer<typeof imageMetadataSchema>;

export const embeddingUpsertSchema = z.object({
  op: z.literal('upsert'),
  id: z.string().min(1),
  uri: z.string().min(1),
  bucket: z.string().min(1),
  name: z.string().min(1),
  generation: generationSchema,
  modelVersion: z.string().min(1),
  /** Inline vector as JSON numbers (readable; accepted for compatibility). */
  vector: z.array(z.number()).optional(),
  /**
   * Inline vector as base64 of little-endian float32 — what the embed step sends: about a third
   * of the JSON size and far cheaper to encode and parse.
   */
  vectorBase64: z
    .string()
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, { message: 'must be base64' })
    .optional(),
  vectorRef: z.object({ shard: z.string(), row: z.number().int().nonnegative() }).optional(),
  metadata: imageMetadataSchema.default({ labels: [] }),
});
export const embeddingDeleteSchema = z.object({
  op: z.literal('delete'),
  id: z.string().min(1),
  uri: z.string().min(1),
  generation: generationSchema,
});
export const embeddingMessageSchema = z.discriminatedUnion('op', [embeddingUpsertSchema, embeddingDeleteSchema]);
export type EmbeddingMessage = z.infer<typeof embeddingMessageSchema>;
export type EmbeddingUpsert = z.infer<typeof embeddingUpsertSchema>;
export type EmbeddingDelete = z.infer<typeof embeddingDeleteSchema>;

export const rejectedImageSchema = z.object({
  id: z.string(),
  uri: z.string(),
  generation: z.string(),
  reason: z.string(),
  detail: z.string(),
  at: z.string(),
});
export type RejectedImage = z.infer<typeof rejectedImageSchema>;

/** Topic names, the same locally and on Pub/Sub (where the prefix comes from the stack). */
export const TOPICS = {
  imageEvents: 'image-events',
  embeddings: 'embeddings',
  retrainRequests: 'retrain-requests',
} as const;

/** Document id: a stable hash of `bucket/name`, so a replaced object keeps its id. */
export function documentId(bucket: string, name: string): string {
  return createHash('sha256').update(`${bucket}/${name}`).digest('hex').slice(0, 32);
}

export function objectUri(bucket: string, name: string): string {
  return bucket.startsWith('/') ? `file://${bucket.replace(/\/$/, '')}/${name}` : `gs://${bucket}/${name}`;
}

/** Compares two int64 decimal generation strings. */
export function compareGenerations(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Float32 vector ⇄ base64 (little-endian), the compact inline form of embedding messages. */
export function vectorToBase64(v: Float32Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
}

export function vectorFromBase64(b64: string): Float32Array {
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length % 4 !== 0) throw new ParseError(`a base64 vector must hold whole float32 values, got ${bytes.length} bytes`);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}
