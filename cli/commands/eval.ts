import type { Command } from 'commander';
import { printOutput, withRuntime } from '../options.js';

export function registerEvalCommand(program: Command): void {
  program
    .command('eval')
    .description('held-out retrieval metrics of a model version on your labelled images (stored in the registry, plotted in reports/metrics.png)')
    .option('--model <version>', 'version to evaluate (default: the active one)')
    .option('--json', 'print {schemaVersion, modelVersion, imageToImage, textToImage, counts}')
    .action(async (opts: { model?: string; json?: boolean }, command: Command) =>
      withRuntime(command, async (runtime) => {
        const { evaluateVersion } = await import('../../shared/services/retrain.js');
        const report = await evaluateVersion({ ...runtime, reportsDir: runtime.config.paths.reports }, opts.model);
        const { modelVersion, imageToImage, textToImage, counts } = report;
        if (opts.json) return printOutput('eval', { modelVersion, imageToImage, textToImage, counts });
        const fmt = (m: Record<string, number>) =>
          Object.entries(m)
            .map(([k, v]) => `${k} ${v.toFixed(4)}`)
            .join('  ');
        process.stdout.write(
          `${modelVersion} on ${report.counts.queries} held-out images (corpus ${report.counts.corpus})\n` +
            `  image→image  ${fmt(imageToImage)}\n` +
            `  text→image   ${textToImage ? fmt(textToImage) : 'n/a (no text tower)'}\n`,
        );
      }),
    );
}
