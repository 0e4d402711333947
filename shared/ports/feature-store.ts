/** The frozen image tower's base embedding of one image, with its labels/caption. */
export interface FeatureRecord {
  id: string;
  uri: string;
  generation: string;
  /** Version of the base (frozen) model that produced `vector`. */
  baseModel: string;
  vector: Float32Array;
  labels: string[];
  caption?: string;
  eventTime?: string;
  /**
   * The tower's intermediate activation (manifest `image.activation`, channels-last) as IEEE
   * half-precision bits: what fine-tuning the blocks above it reads instead of the image.
   */
  activation?: Uint16Array;
}

/** Base embeddings for retraining and reindexing without re-decoding images. */
export interface FeatureStore {
  /** Idempotent, generation-ordered like the vector index. */
  put(records: FeatureRecord[]): Promise<void>;
  delete(items: { id: string; generation: string }[]): Promise<void>;
  get(id: string): Promise<FeatureRecord | null>;
  count(): Promise<number>;
  scan(batchSize?: number): AsyncIterable<FeatureRecord[]>;
}
