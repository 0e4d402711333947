import { silentLogger } from '../../shared/logger.js';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import type { OpenSearchIndexOptionsInput } from '../../shared/adapters/opensearch/index.js';
import { describeVectorIndexContract, type CatalogFixture } from '../contracts/vector-index.contract.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';

// The shared contract against the adapter talking HTTP to the in-memory fake (offline); the
// same suite runs against a real cluster in test/integration/opensearch-contract.integration.test.ts.
// The fake's scheduled refresh is off: a write reaches _search and _count only through a refresh
// someone asked for, the worst a cluster does within its refresh interval.
async function fakeCluster(options: OpenSearchIndexOptionsInput, withRefreshApi: boolean): Promise<CatalogFixture> {
  const fake = new FakeOpenSearch();
  fake.autoRefresh = false;
  await fake.start();
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  const catalog = new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1, ...options }), silentLogger);
  const makeSearchable = async (index: { name: string }) => {
    const res = await fetch(`${fake.url}/${encodeURIComponent(index.name)}/_refresh`, { method: 'POST' });
    if (!res.ok) throw new Error(`refresh of ${index.name} answered ${res.status}`);
  };
  return { catalog, cleanup: () => fake.stop(), ...(withRefreshApi ? { makeSearchable } : {}) };
}

// Production settings (refresh=false): queries see writes after a refresh (the fixture's), while
// count() and scan() must refresh what the adapter wrote by themselves.
describeVectorIndexContract('opensearch (fake server, production options: refresh=false)', () => fakeCluster({}, true));

// refresh=wait_for and no refresh from the fixture: every write is searchable when its bulk returns.
describeVectorIndexContract('opensearch (fake server, refresh=wait_for)', () => fakeCluster({ refresh: 'wait_for' }, false));
