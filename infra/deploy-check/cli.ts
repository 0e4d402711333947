/**
 * `npm run check:deploy`: builds the Pulumi program under the realistic mocks in every mode a user
 * can choose, runs the deploy check (what Google Cloud enforces on a first `pulumi up`), and prints
 * a report: each rule with what it checked and what fails, then each deployable's size.
 * Exit code 1 when anything fails.
 */
import { CLOUD_RUN_GPU_JOB_REGIONS } from '../config.js';
import { deployablesReport } from '../packaging.js';
import { buildStack, TEST_PROJECT_NUMBER } from '../testing/mocks.js';
import { accessNeeds, CLOUD_WORKLOADS } from '../../shared/wiring/cloud-access.js';
import { runChecks, type Finding, type RuleName } from './checks.js';
import { DEPLOY_MODES } from './modes.js';
import { ROLE_DATA } from './google-rules.js';

const RULES: Record<RuleName, string> = {
  permissions: 'each workload holds every permission its adapters need, on the resource it is configured with',
  'platform-permissions': "Google's own machinery (push, dead-lettering, triggers, schedules, builds, image pulls) can act",
  apis: 'every resource and client goes through an enabled API, created after enablement',
  names: "names passed between resources are the kind Google expects, within Google's limits",
  locations: 'triggers sit with their buckets; GPUs only where Cloud Run has them',
  'start-up order': 'what must exist or have propagated first is waited for',
  exposure:
    'a service anyone may call sits behind a load balancer with a Cloud Armor rate limit and TLS 1.2+, its run.app URL off; an IAP service lets IAP invoke it',
};

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

async function main(): Promise<number> {
  const out: string[] = [];
  out.push('Deploy check: what one `pulumi up` meets in a fresh Google Cloud project', '');
  out.push(`Role data: ${Object.keys(ROLE_DATA.roles).length} predefined roles from ${ROLE_DATA.source} (retrieved ${ROLE_DATA.retrieved})`);
  out.push(`Workload needs: ${CLOUD_WORKLOADS.map((w) => `${w} ${accessNeeds(w).length}`).join(', ')} permission checks`, '');
  let failed = 0;
  for (const [mode, raw] of DEPLOY_MODES) {
    const resources = await buildStack(raw);
    const { model, findings } = runChecks(resources, {
      projectNumber: TEST_PROJECT_NUMBER,
      region: raw.region ?? 'us-central1',
      gpuRegions: CLOUD_RUN_GPU_JOB_REGIONS,
    });
    out.push(`## ${mode}: ${resources.length} resources, ${model.grants.length} grants, ${model.workloads.size} workloads`);
    const byRule = new Map<RuleName, Finding[]>();
    for (const f of findings) byRule.set(f.rule, [...(byRule.get(f.rule) ?? []), f]);
    for (const [rule, what] of Object.entries(RULES) as [RuleName, string][]) {
      const list = byRule.get(rule) ?? [];
      out.push(`  ${list.length === 0 ? 'ok  ' : 'FAIL'} ${rule}: ${what}`);
      for (const f of list) out.push(`       - ${f.message}`);
    }
    failed += findings.length;
    out.push('');
  }

  out.push('## Deployables (each ships only what it imports, as JavaScript)');
  out.push('  name              kind      bundle      installed    packages  externals');
  for (const row of deployablesReport()) {
    out.push(
      `  ${row.name.padEnd(17)} ${row.kind.padEnd(9)} ${mib(row.bundleBytes).padStart(9)}  ${mib(row.installedBytes).padStart(10)}  ${String(row.modules).padStart(8)}  ${row.externals.join(', ')}`,
    );
  }
  out.push('', failed === 0 ? 'Deploy check passed.' : `Deploy check FAILED: ${failed} finding(s).`);
  console.log(out.join('\n'));
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
