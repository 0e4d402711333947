import { silentLogger } from '../../shared/logger.js';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import { describeVectorIndexContract } from '../contracts/vector-index.contract.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';

// The shared contract against the adapter talking HTTP to the in-memory fake (offline); the
// same suite runs against a real cluster in test/integration/opensearch-contract.integration.test.ts.
describeVectorIndexContract('opensearch (fake server)', async () => {
  const fake = new FakeOpenSearch();
  await fake.start();
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  const catalog = new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1 }), silentLogger);
  return { catalog, cleanup: () => fake.stop() };
});
