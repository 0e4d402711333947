import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsRejectionLog } from '../../shared/adapters/gcp/gcs-rejection-log.js';
import type { RejectedImage } from '../../shared/contracts.js';
import { FakeGcsServer } from './gcp-fake-gcs-server.js';

/** The rejection log over the real GcsBlobStore and Storage client, against the in-memory GCS server. */
const server = new FakeGcsServer();
let log: GcsRejectionLog;

const rejection = (id: string, generation: string, at: string, reason = 'too-large'): RejectedImage => ({
  id,
  uri: `gs://iss-images/photos/${id}.jpg`,
  generation,
  reason,
  detail: `${reason} detail`,
  at,
});

beforeAll(async () => {
  await server.start();
});
afterAll(() => server.stop());
beforeEach(() => {
  server.reset();
  log = new GcsRejectionLog(new GcsBlobStore(server.storage(), 'iss-features'));
});

describe('GcsRejectionLog', () => {
  it('keeps one JSON object per id under rejected/, newest first in list', async () => {
    await log.record(rejection('a1', '10', '2025-03-01T10:00:00Z'));
    await log.record(rejection('b2', '11', '2025-03-01T11:00:00Z', 'empty-file'));
    expect(JSON.parse(server.get('iss-features', 'rejected/a1.json')!.data.toString())).toMatchObject({ id: 'a1', reason: 'too-large' });
    expect((await log.list()).map((r) => r.id)).toEqual(['b2', 'a1']);
    expect(await log.count()).toBe(2);
  });

  it('a newer generation replaces the record, an older one never does', async () => {
    await log.record(rejection('a1', '10', '2025-03-01T10:00:00Z'));
    await log.record(rejection('a1', '12', '2025-03-01T10:05:00Z', 'corrupt-image'));
    await log.record(rejection('a1', '11', '2025-03-01T10:06:00Z', 'empty-file'));
    expect(await log.list()).toEqual([rejection('a1', '12', '2025-03-01T10:05:00Z', 'corrupt-image')]);
  });

  it('clear(id, generation) keeps a newer rejection and removes an older or equal one', async () => {
    await log.record(rejection('a1', '12', '2025-03-01T10:00:00Z'));
    await log.clear('a1', '11');
    expect(await log.count()).toBe(1);
    await log.clear('a1', '12');
    expect(await log.count()).toBe(0);
    await log.clear('never-seen', '1');
  });

  it('refuses ids that are not document ids', async () => {
    await expect(log.record(rejection('../x', '1', '2025-03-01T10:00:00Z'))).rejects.toThrow(/Invalid rejection id/);
  });
});
