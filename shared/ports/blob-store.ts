/** An object in a bucket (GCS) or a file in a watched folder (local). */
export interface BlobInfo {
  bucket: string;
  name: string;
  /** int64 decimal string: GCS object generation, or file mtime in microseconds locally. */
  generation: string;
  size: number;
  contentType: string;
  updated: string;
}

export interface ListOptions {
  /** Only names lexicographically equal to or after this one. */
  startOffset?: string;
}

/** Read / list / stat (and write, for registries and shards) objects of one bucket. */
export interface BlobStore {
  readonly bucket: string;
  /** `gs://bucket/name` or `file:///abs/path`. */
  uri(name: string): string;
  /**
   * Reads the object. With `generation`, throws GenerationMismatchError when the object now has
   * another generation (it was replaced or deleted since the event), NotFoundError when absent.
   */
  read(name: string, options?: { generation?: string; maxBytes?: number }): Promise<Buffer>;
  stat(name: string): Promise<BlobInfo | null>;
  /**
   * Objects whose names start with `prefix`, in name order. With `startOffset`, only names that
   * sort at or after it (GCS JSON API `startOffset`): a listing can skip what it knows is too old.
   */
  list(prefix?: string, options?: ListOptions): AsyncIterable<BlobInfo>;
  write(name: string, data: Buffer | string, options?: { contentType?: string }): Promise<BlobInfo>;
  delete(name: string): Promise<void>;
}
