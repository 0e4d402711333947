import type { Command } from 'commander';
import { printOutput, withRuntime } from '../options.js';

export function registerDriftCommand(program: Command): void {
  program
    .command('drift')
    .description(
      "compare recent uploads and image queries with the active model's training profile (PSI, KS), check Recall@1 on newly labelled images, and show whether a retraining would be requested (`up` requests it)",
    )
    .option('--json', 'print {schemaVersion, modelVersion, reference, settings, signals, servedReference, recall, decision, lastCheck, requests}')
    .action(async (opts: { json?: boolean }, command: Command) =>
      withRuntime(command, async (runtime) => {
        const { driftOutput } = await import('../../shared/services/drift.js');
        const { localDriftDeps } = await import('../../shared/wiring/local.js');
        const report = await driftOutput(localDriftDeps(runtime), runtime.config.drift.settings);
        if (opts.json) return printOutput('drift', report);
        const out: string[] = [`model ${report.modelVersion}`];
        if (!report.reference || !report.signals) {
          out.push(`  ${report.note ?? 'no reference profile'}`);
        } else {
          const s = report.settings;
          out.push(
            `  reference: ${report.reference.count} training embeddings, ${report.reference.components} principal components (${report.reference.createdAt})`,
          );
          const served = report.servedReference;
          out.push(
            served
              ? `  served-query reference: the model's first ${served.count} sampled queries (${served.from} … ${served.until})${served.kept ? '' : ' — provisional: the next check keeps it'}`
              : `  served-query reference: not yet (made from the model's first ${s.servedBaseline} sampled queries, IMGSEARCH_DRIFT_SERVED_BASELINE)`,
          );
          for (const [key, sig] of Object.entries(report.signals)) {
            const name =
              key === 'servedQueries' ? 'queries since the served reference' : key === 'queries' ? 'queries (vs training, reported only)' : key.padEnd(8);
            if (sig.error) {
              out.push(`  ${name} not read: ${sig.error}`);
              continue;
            }
            if (sig.status === 'insufficient') {
              out.push(`  ${name} ${sig.sample} vectors: too few to judge (IMGSEARCH_DRIFT_MIN_SAMPLE=${s.minSample})`);
              continue;
            }
            const label = sig.labelPsi === null ? '' : `, label-mix PSI ${sig.labelPsi.toFixed(3)}`;
            out.push(
              `  ${name} ${sig.sample} vectors: ${sig.status === 'drift' ? 'DRIFT' : 'no shift'} — max PSI ${sig.psi!.max.toFixed(3)} (${sig.psi!.band}; threshold ${s.psiThreshold}${sig.psi!.critical > s.psiThreshold ? `, significant from ${sig.psi!.critical.toFixed(3)}` : ''}), ` +
                `centroid KS D ${sig.centroidKs!.d.toFixed(3)} (threshold ${s.ksThreshold})${label}`,
            );
          }
          const r = report.recall;
          if (r) {
            out.push(
              r.recallAt1 === null
                ? `  recall   ${r.newLabelled} new labelled images: too few to measure Recall@1`
                : `  recall   Recall@1 on ${r.newLabelled} new labelled images ${r.recallAt1.toFixed(3)} (recorded ${r.recorded === null ? 'n/a' : r.recorded.toFixed(3)}; retrain on a drop > ${s.recallDrop})`,
            );
          }
        }
        const d = report.decision;
        out.push(
          d.retrain
            ? `decision: retrain — ${d.reasons.join('; ')}`
            : d.heldBack
              ? `decision: held back (${d.heldBack}) — ${d.reasons.join('; ')}`
              : 'decision: no retraining needed',
        );
        const last = report.requests.at(-1);
        if (last) out.push(`last request: ${last.at} (${last.outcome}) — ${last.reasons.join('; ')}`);
        process.stdout.write(`${out.join('\n')}\n`);
      }),
    );
}
