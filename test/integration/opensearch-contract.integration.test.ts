import { randomBytes } from 'node:crypto';
import { describe, it } from 'vitest';
import { silentLogger } from '../../shared/logger.js';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import { describeVectorIndexContract } from '../contracts/vector-index.contract.js';

/**
 * The shared VectorIndex contract against a real OpenSearch (with the k-NN plugin), when
 * OPENSEARCH_URL is set (plus OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD / OPENSEARCH_CA_FILE).
 * Each catalog gets its own alias, so runs never touch each other's indices, and writes use
 * refresh=wait_for so searches see them at once.
 */
const url = process.env.OPENSEARCH_URL;

if (!url) {
  console.warn('OPENSEARCH_URL not set: skipping the OpenSearch contract tests (they need a cluster with the k-NN plugin)');
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
  describeVectorIndexContract('opensearch (real cluster)', async () => {
    const alias = `iss-test-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const options = parseOpenSearchIndexOptions({ alias, refresh: 'wait_for', replicas: 0 });
    const catalog = new OpenSearchIndexCatalog(createOpenSearchClient(connection), options, silentLogger);
    const cleanup = async () => {
      const admin = createOpenSearchClient(connection);
      try {
        const res = await admin.transport.request(
          { method: 'GET', path: `/_cat/indices/${alias}-*`, querystring: { format: 'json', h: 'index' } },
          { ignore: [404] },
        );
        const names = (Array.isArray(res.body) ? (res.body as { index: string }[]) : []).map((r) => r.index).filter((n) => n.startsWith(`${alias}-`));
        for (const name of names) await admin.transport.request({ method: 'DELETE', path: `/${name}` }, { ignore: [404] });
      } finally {
        await admin.close();
      }
    };
    return { catalog, cleanup };
  });
}
