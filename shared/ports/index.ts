export type * from './blob-store.js';
export type * from './event-bus.js';
export type * from './vector-index.js';
export type * from './model-registry.js';
export type * from './job-launcher.js';
export type * from './feature-store.js';
export type * from './rejection-log.js';
export type * from './embedder.js';
