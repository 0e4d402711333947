export { createOpenSearchClient, redact, safeUrl, type OpenSearchConnectionOptions } from './client.js';
export { OpenSearchIndexCatalog, openOpenSearchCatalog, type OpenOpenSearchCatalogConfig } from './catalog.js';
export { OpenSearchVectorIndex } from './vector-index.js';
export { OpenSearchBulkItemError, OpenSearchRequestError } from './errors.js';
export { openSearchIndexOptionsSchema, parseOpenSearchIndexOptions, type OpenSearchIndexOptions, type OpenSearchIndexOptionsInput } from './options.js';
export { cosineToScore, scoreToCosine, type SpaceType } from './scores.js';
export { knnBehaviour, parseClusterVersion, type ClusterVersion, type KnnBehaviour } from './cluster.js';
export { knnSearchBody, filterClauses, MAX_K } from './query-dsl.js';
export { indexBody } from './index-body.js';
