import { randomBytes } from 'node:crypto';
import type { Client } from '@opensearch-project/opensearch';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.js';
import {
  createOpenSearchClient,
  OpenSearchIndexCatalog,
  parseClusterVersion,
  parseOpenSearchIndexOptions,
  type OpenSearchIndexOptionsInput,
} from '../../shared/adapters/opensearch/index.js';
import { describeVectorIndexContract } from '../contracts/vector-index.contract.js';

/**
 * The shared VectorIndex contract against a real OpenSearch (with the k-NN plugin), when
 * OPENSEARCH_URL is set (plus OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD / OPENSEARCH_CA_FILE, the
 * variables the product reads; docs/TESTING.md says how to get a cluster). Every catalog gets its
 * own alias `iss-test-<time>-<random>`, so runs never touch each other's indices, and deletes its
 * indices afterwards.
 *
 * It runs twice: with the production options (refresh=false: queries see writes after a refresh,
 * which the fixture asks for the way the refresh interval would within a second, while count()
 * and scan() must see them unaided), and with refresh=wait_for. Then it checks on the cluster the
 * rules the offline fake (test/unit/opensearch-fake-server.ts) holds.
 */
const url = process.env.OPENSEARCH_URL;

if (!url) {
  console.warn('OPENSEARCH_URL not set: skipping the OpenSearch contract tests (they need a cluster with the k-NN plugin; see docs/TESTING.md)');
  describe.skip('VectorIndex contract: opensearch (OPENSEARCH_URL not set)', () => {
    it('needs a cluster', () => undefined);
  });
} else {
  const connection = {
    url,
    username: process.env.OPENSEARCH_USERNAME,
    password: process.env.OPENSEARCH_PASSWORD,
    caFile: process.env.OPENSEARCH_CA_FILE,
  };
  const newAlias = () => `iss-test-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

  async function dropIndicesOf(admin: Client, alias: string): Promise<void> {
    const res = await admin.transport.request(
      { method: 'GET', path: `/_cat/indices/${alias}-*`, querystring: { format: 'json', h: 'index' } },
      { ignore: [404] },
    );
    const names = (Array.isArray(res.body) ? (res.body as { index: string }[]) : []).map((r) => r.index).filter((n) => n.startsWith(`${alias}-`));
    for (const name of names) await admin.transport.request({ method: 'DELETE', path: `/${name}` }, { ignore: [404] });
  }

  const fixture = (tuning: OpenSearchIndexOptionsInput, refreshBeforeQueries: boolean) => async () => {
    const alias = newAlias();
    // Production options but the alias; on a one-node cluster the replica stays unassigned (yellow), which OpenSearch serves as usual.
    const catalog = new OpenSearchIndexCatalog(createOpenSearchClient(connection), parseOpenSearchIndexOptions({ alias, ...tuning }), silentLogger);
    const admin = createOpenSearchClient(connection);
    const makeSearchable = async (index: { name: string }) => {
      await admin.transport.request({ method: 'POST', path: `/${encodeURIComponent(index.name)}/_refresh` });
    };
    const cleanup = async () => {
      try {
        await dropIndicesOf(admin, alias);
      } finally {
        await admin.close();
      }
    };
    return { catalog, cleanup, ...(refreshBeforeQueries ? { makeSearchable } : {}) };
  };

  describeVectorIndexContract('opensearch (real cluster, production options: refresh=false)', fixture({}, true));
  describeVectorIndexContract('opensearch (real cluster, refresh=wait_for)', fixture({ refresh: 'wait_for' }, false));

  describe('the rules the offline fake holds, on the real cluster', () => {
    const alias = newAlias();
    let admin: Client;
    let version: readonly [number, number, number];
    const call = async (method: 'GET' | 'POST' | 'PUT', path: string, body?: Record<string, unknown>, bulkBody?: string) =>
      admin.transport.request(
        { method, path, ...(body !== undefined ? { body } : {}), ...(bulkBody !== undefined ? { bulkBody } : {}) },
        { ignore: [400, 404] },
      );
    const knnIndex = (engine: string, space: string) => ({
      settings: { index: { knn: true, number_of_replicas: 0 } },
      mappings: {
        properties: { vector: { type: 'knn_vector', dimension: 2, method: { name: 'hnsw', engine, space_type: space } }, label: { type: 'keyword' } },
      },
    });
    const doc = (index: string, vector: number[]) => `${JSON.stringify({ index: { _index: index, _id: 'a' } })}\n${JSON.stringify({ vector, label: 'cat' })}\n`;
    const knnSearch = (index: string, filter?: unknown) =>
      call('POST', `/${index}/_search`, { size: 1, query: { knn: { vector: { vector: [1, 0], k: 1, ...(filter ? { filter } : {}) } } } });

    beforeAll(async () => {
      admin = createOpenSearchClient(connection);
      version = parseClusterVersion(((await call('GET', '/')).body as { version: { number: string } }).version.number)!;
    });
    afterAll(async () => {
      await dropIndicesOf(admin, alias);
      await admin.close();
    });

    it('makes a write visible to _count only after a refresh, to GET at once', async () => {
      const index = `${alias}-visibility`;
      await call('PUT', `/${index}`, { settings: { index: { refresh_interval: '-1', number_of_replicas: 0 } } });
      await call('POST', '/_bulk', undefined, doc(index, [1, 0]));
      expect(((await call('POST', `/${index}/_count`, {})).body as { count: number }).count).toBe(0);
      expect((await call('GET', `/${index}/_doc/a`)).body).toMatchObject({ found: true });
      await call('POST', `/${index}/_refresh`);
      expect(((await call('POST', `/${index}/_count`, {})).body as { count: number }).count).toBe(1);
    });

    it('takes a filter inside knn on lucene and faiss, refuses it on nmslib', async () => {
      for (const engine of ['lucene', 'faiss', 'nmslib']) {
        const index = `${alias}-filter-${engine}`;
        const created = await call('PUT', `/${index}`, knnIndex(engine, 'l2'));
        if (engine === 'nmslib' && created.statusCode === 400) {
          expect(version[0]).toBeGreaterThanOrEqual(3); // no new nmslib indices from 3.0 on
          continue;
        }
        await call('POST', '/_bulk', undefined, doc(index, [1, 0]));
        await call('POST', `/${index}/_refresh`);
        const res = await knnSearch(index, { term: { label: 'cat' } });
        if (engine === 'nmslib') {
          expect(res.statusCode).toBe(400);
          expect(JSON.stringify(res.body)).toContain('Engine [NMSLIB] does not support filters');
        } else expect(res.statusCode).toBe(200);
      }
    });

    it('scores cosinesimil as (2 − d) / 2 on lucene, and on faiss as the cluster version says', async () => {
      // Stored [0.6, 0.8] against [1, 0]: d = 1 − 0.6 = 0.4.
      for (const engine of ['lucene', 'faiss']) {
        const index = `${alias}-cosine-${engine}`;
        const created = await call('PUT', `/${index}`, knnIndex(engine, 'cosinesimil'));
        if (engine === 'faiss' && created.statusCode === 400) {
          console.warn(`this cluster (${version.join('.')}) refuses cosinesimil on faiss: ${JSON.stringify(created.body)}`);
          continue;
        }
        expect(created.statusCode).toBe(200);
        await call('POST', '/_bulk', undefined, doc(index, [0.6, 0.8]));
        await call('POST', `/${index}/_refresh`);
        const score = ((await knnSearch(index)).body as { hits: { hits: { _score: number }[] } }).hits.hits[0]!._score;
        const unified = engine === 'lucene' || version[0] > 2 || (version[0] === 2 && version[1] >= 19);
        expect(score).toBeCloseTo(unified ? 0.8 : 1 / 1.4, 5);
      }
    });
  });
}
