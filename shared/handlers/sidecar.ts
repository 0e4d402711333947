import path from 'node:path';
import { z } from 'zod';
import type { BlobStore } from '../ports/blob-store.js';

const sidecarSchema = z.object({
  labels: z.array(z.string()).optional(),
  label: z.string().optional(),
  caption: z.string().optional(),
});

export interface SidecarMetadata {
  labels: string[];
  caption?: string;
}

/**
 * Captions and labels of an image: a sidecar `<stem>.json` ({labels, label, caption}) or
 * `<stem>.txt` (the caption) beside it; otherwise the folder name is the label.
 */
export async function readImageMetadata(store: BlobStore, name: string): Promise<SidecarMetadata> {
  const dir = path.posix.dirname(name);
  const stem = path.posix.basename(name, path.posix.extname(name));
  const base = dir === '.' ? stem : `${dir}/${stem}`;
  const json = await tryRead(store, `${base}.json`);
  if (json !== null) {
    const parsed = sidecarSchema.safeParse(safeJson(json));
    if (parsed.success) {
      const labels = parsed.data.labels ?? (parsed.data.label ? [parsed.data.label] : []);
      return { labels, caption: parsed.data.caption ?? (labels.length ? labels.join(', ') : undefined) };
    }
  }
  const txt = await tryRead(store, `${base}.txt`);
  if (txt !== null && txt.trim()) return { labels: [txt.trim()], caption: txt.trim() };
  const folder = dir === '.' ? undefined : path.posix.basename(dir);
  return folder ? { labels: [folder], caption: folder } : { labels: [] };
}

async function tryRead(store: BlobStore, name: string): Promise<string | null> {
  try {
    const info = await store.stat(name);
    if (!info || info.size > 64 * 1024) return null;
    return (await store.read(name)).toString('utf8');
  } catch {
    return null;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
