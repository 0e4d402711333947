import type { RawStackConfig } from '../config.js';

/** The deployment modes the deploy check builds: every choice a user can make that changes the resources. */
export const DEPLOY_MODES: [string, Partial<RawStackConfig>][] = [
  ['default (GPU embed job, OpenSearch on a private VM)', {}],
  [
    'external OpenSearch, CPU embedding, public search',
    {
      opensearch: { mode: 'external' },
      opensearchUrl: 'https://search.example.com:9200',
      embed: { gpu: false, cpu: 4, memory: '8Gi' },
      search: { access: 'public', domain: 'search.example.com' },
    } as Partial<RawStackConfig>,
  ],
  // Query sampling off (querySampleRate 0): no sink, and no create grant under query-vectors/.
  ['search behind IAP, no query sample', { search: { access: 'iap', iapMembers: ['group:team@example.com'], querySampleRate: 0 } } as Partial<RawStackConfig>],
  ['prefix "photos" in europe-west4', { prefix: 'photos', region: 'europe-west4' } as Partial<RawStackConfig>],
];
