import { parentPort } from 'node:worker_threads';
import type { PcaFit } from '../map-math.js';
import { computePcaView, UmapLayout, UMAP_MIN_POINTS } from './collection-map-compute.js';
import type { MapComputeSettings } from './collection-map.js';

/**
 * The map worker's body (started by collection-map.ts through collection-map-worker.mjs). One
 * worker per computed map: it computes the PCA view and posts it, then fits UMAP and posts that,
 * and keeps the UMAP model to place new points (`transform`) until the map is dropped.
 */
export type ToMapWorker =
  | { type: 'compute'; vectors: Float32Array; n: number; dim: number; settings: MapComputeSettings; umap: boolean }
  | { type: 'transform'; id: number; rows: Float32Array };

export type FromMapWorker =
  | {
      type: 'pca';
      xy: Float32Array;
      pca: PcaFit;
      bestK: number;
      silhouette: { k: number; score: number }[];
      silhouetteSample: number;
      clusters: [number, Int32Array][];
      timings: { pcaMs: number; clusterMs: number };
    }
  | { type: 'umap-progress'; done: number }
  | { type: 'umap'; xy: Float32Array; ms: number }
  | { type: 'umap-skipped'; reason: string }
  | { type: 'transformed'; id: number; xy: Float32Array }
  | { type: 'error'; phase: 'pca' | 'umap' | 'transform'; id?: number; message: string; stack?: string };

const port = parentPort!;
let layout: UmapLayout | null = null;
let umapFailure: string | null = null;

const post = (msg: FromMapWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);
const fail = (phase: 'pca' | 'umap' | 'transform', err: unknown, id?: number) =>
  post({ type: 'error', phase, id, message: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });

port.on('message', (msg: ToMapWorker) => {
  if (msg.type === 'transform') {
    if (!layout) return fail('transform', new Error(umapFailure ?? 'UMAP is not fitted yet'), msg.id);
    try {
      const xy = layout.transform(msg.rows);
      post({ type: 'transformed', id: msg.id, xy }, [xy.buffer as ArrayBuffer]);
    } catch (err) {
      fail('transform', err, msg.id);
    }
    return;
  }
  let view;
  try {
    view = computePcaView(msg.vectors, msg.n, msg.dim, msg.settings);
    const xy = view.xy.slice();
    post({
      type: 'pca',
      xy,
      pca: view.pca,
      bestK: view.bestK,
      silhouette: view.silhouette,
      silhouetteSample: view.silhouetteSample,
      clusters: [...view.clusters],
      timings: view.timings,
    });
  } catch (err) {
    return fail('pca', err);
  }
  if (!msg.umap) return post({ type: 'umap-skipped', reason: 'UMAP is turned off for this map' });
  if (msg.n < UMAP_MIN_POINTS) return post({ type: 'umap-skipped', reason: `UMAP needs at least ${UMAP_MIN_POINTS} images, the sample has ${msg.n}` });
  try {
    layout = UmapLayout.fit(view.reduced, msg.n, view.pca.count, msg.settings, (done) => post({ type: 'umap-progress', done }));
    const xy = layout.xy.slice();
    post({ type: 'umap', xy, ms: layout.ms }, [xy.buffer as ArrayBuffer]);
  } catch (err) {
    umapFailure = `UMAP failed: ${err instanceof Error ? err.message : String(err)}`;
    fail('umap', err);
  }
});
