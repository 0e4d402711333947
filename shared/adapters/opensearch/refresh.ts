/**
 * The indices this process wrote to with `refresh=false` and has not refreshed since.
 *
 * OpenSearch makes a write visible to `_search` and `_count` only after a refresh ("Refresh Index
 * API", https://docs.opensearch.org/latest/api-reference/index-apis/refresh/: every
 * `index.refresh_interval`, 1 s by default), while GET and `_mget` are realtime ("Get Document
 * API": `realtime` defaults to true). `count()` and `scan()` verify or re-read what was written —
 * the reindex compares the count with the documents it wrote before it swaps the alias — so they
 * refresh an index this process wrote to first (`POST <index>/_refresh`). Nothing else does: the
 * search path never forces a refresh (it needs write access to the index, and each one makes a
 * small segment), and a process that wrote nothing has nothing of its own to wait for.
 */
export class UnrefreshedWrites {
  private readonly names = new Set<string>();

  /** Called before a write is sent and again when it is answered (it may land in between). */
  wrote(index: string): void {
    this.names.add(index);
  }

  /**
   * Runs `refresh` when `index` has writes of ours a search may not see yet. The name is
   * forgotten before the refresh starts, so a write answered meanwhile marks it again.
   */
  async refreshIfWritten(index: string, refresh: () => Promise<void>): Promise<void> {
    if (!this.names.delete(index)) return;
    try {
      await refresh();
    } catch (err) {
      this.names.add(index);
      throw err;
    }
  }
}
