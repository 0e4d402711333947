import path from 'node:path';
import type { Command } from 'commander';
import type { EpochStats } from '../../shared/training/lit-trainer.js';
import type { RetrainProgress } from '../../shared/services/retrain.js';
import { parseIntIn, parseNumberIn, printOutput, withRuntime } from '../options.js';

export { parseNumberIn };

/** One line per epoch with a bar proportional to the loss: the loss curve, readable in a terminal. */
export function epochLine(e: EpochStats, total: number, firstLoss: number): string {
  const width = Math.max(0, Math.min(40, Math.round((e.loss / (firstLoss || 1)) * 30)));
  const val = e.validationRecallAt1 === null ? '' : `  val recall@1 ${e.validationRecallAt1.toFixed(4)}`;
  return `epoch ${String(e.epoch).padStart(String(total).length)}/${total}  loss ${e.loss.toFixed(4)} ${'█'.repeat(width)}${val}`;
}

export function registerRetrainCommand(program: Command): void {
  program
    .command('retrain')
    .description(
      'train a new head + text tower on your labelled images and click feedback; promote it (and re-index) only if it beats the active model on held-out images',
    )
    .option('--epochs <n>', 'training epochs (early stopping may end sooner)', parseIntIn(0, 10_000), 30)
    .option('--seed <n>', 'random seed (same data + seed = same model)', parseIntIn(0, 2 ** 31 - 1), 42)
    .option('--margin <x>', 'held-out recall@1 gain required to promote', parseNumberIn(0, 1), 0.005)
    .option('--held-out <f>', 'share of labelled images held out for evaluation', parseNumberIn(0, 1, { exclusive: true }), 0.1)
    .option(
      '--validation <f>',
      'share of training images used to pick the best epoch (0: keep the last epoch; helps below ~1,000 images)',
      parseNumberIn(0, 0.5),
    )
    .option(
      '--hidden <n>',
      'hidden units of the projection head (default 512; wider learns more from tens of thousands of images, and trains slower)',
      parseIntIn(1, 8192),
    )
    .option(
      '--unlock-blocks <n>',
      'also fine-tune the top N units of the image tower (1: last conv; 2–4: + block_16, block_15, block_14) from activations stored at ingest; 0: head only (default)',
      parseIntIn(0, 4),
    )
    .option(
      '--region-grid <n>',
      "also pool the stored block-13 activation over N×N regions into the image tower's base embedding (2–7: a new ONNX tower, every stored image re-embedded from its activation, no image decoded); 1: global pooling only; 0: the active tower's layout as it is (default)",
      parseIntIn(0, 7),
    )
    .option('--tower-lr <x>', 'learning rate of the unlocked tower weights (default 0.0001)', parseNumberIn(0, 1, { exclusive: true }))
    .option(
      '--head-epochs <n>',
      'with --unlock-blocks: the first N of the epochs train the head alone (fast), then the blocks join it (default 0: from the first epoch)',
      parseIntIn(0, 10_000),
    )
    .option('--json', 'print {schemaVersion, promoted, decision, candidate, current, index, plot} (progress goes to stderr)')
    .action(
      async (
        opts: {
          epochs: number;
          seed: number;
          margin: number;
          heldOut: number;
          validation?: number;
          hidden?: number;
          unlockBlocks?: number;
          regionGrid?: number;
          towerLr?: number;
          headEpochs?: number;
          json?: boolean;
        },
        command: Command,
      ) => {
        const { Presets, SingleBar } = await import('cli-progress');
        const { readFeedbackFile } = await import('../../shared/services/feedback.js');
        const { activateWithIndex } = await import('../../shared/services/model-lifecycle.js');
        const { retrain } = await import('../../shared/services/retrain.js');
        const { lifecycleDeps } = await import('../../shared/wiring/local.js');
        // Progress always goes to stderr: stdout carries the result only (`retrain | head -1`, `--json`).
        const out = process.stderr;
        const bar = process.stderr.isTTY
          ? new SingleBar({ format: 'training |{bar}| epoch {value}/{total}  loss {loss}', clearOnComplete: true }, Presets.shades_classic)
          : null;
        let firstLoss = 0;
        const say = (line: string) => out.write(bar && out === process.stderr ? `\r\x1b[K${line}\n` : `${line}\n`);
        const onProgress = (p: RetrainProgress) => {
          if (p.stage === 'load') {
            say(`${p.records} stored embeddings`);
            if (opts.epochs > 0) bar?.start(opts.epochs, 0, { loss: '-' });
          } else if (p.stage === 'train') {
            if (p.epoch.epoch === 1) firstLoss = p.epoch.loss;
            say(epochLine(p.epoch, opts.epochs, firstLoss));
            bar?.update(p.epoch.epoch, { loss: p.epoch.loss.toFixed(4) });
          } else if (p.stage === 'evaluate') {
            bar?.stop();
            say(`evaluating ${p.model} on held-out images`);
          } else if (p.stage === 'activate') say(`${p.version} passed the gate: building its index`);
          else if (p.stage === 'register') say(`registered ${p.version}${p.promoted ? ' (active)' : ''}`);
        };
        try {
          await withRuntime(
            command,
            async (runtime) => {
              const lifecycle = lifecycleDeps(runtime);
              const feedbackFile = path.join(runtime.config.paths.feedback, 'feedback.jsonl');
              const result = await retrain(
                {
                  ...lifecycle,
                  activate: activateWithIndex(lifecycle),
                  feedback: async () => (await readFeedbackFile(feedbackFile, { logger: runtime.logger })).pairs,
                  reportsDir: runtime.config.paths.reports,
                },
                {
                  epochs: opts.epochs,
                  seed: opts.seed,
                  margin: opts.margin,
                  heldOutFraction: opts.heldOut,
                  training: {
                    ...(opts.validation !== undefined ? { validationFraction: opts.validation } : {}),
                    ...(opts.hidden !== undefined ? { hidden: opts.hidden } : {}),
                    ...(opts.unlockBlocks !== undefined ? { unlockBlocks: opts.unlockBlocks } : {}),
                    ...(opts.regionGrid !== undefined ? { regionGrid: opts.regionGrid } : {}),
                    ...(opts.towerLr !== undefined ? { towerLearningRate: opts.towerLr } : {}),
                    ...(opts.headEpochs !== undefined ? { headOnlyEpochs: opts.headEpochs } : {}),
                  },
                },
                onProgress,
              );
              bar?.stop();
              const { activation: index, ...rest } = result;
              if (opts.json) return printOutput('retrain', { ...rest, index });
              const r1 = (m: { imageToImage: { 'recall@1': number } }) => m.imageToImage['recall@1'].toFixed(4);
              const p10 = (m: { textToImage: { 'precision@10': number } | null }) => (m.textToImage ? m.textToImage['precision@10'].toFixed(4) : 'n/a');
              process.stdout.write(
                `candidate ${result.candidate.version}: recall@1 ${r1(result.candidate.metrics)}, text precision@10 ${p10(result.candidate.metrics)} (${result.candidate.training.seconds.toFixed(1)} s, best epoch ${result.candidate.training.bestEpoch})\n` +
                  towerLine(result.candidate.training) +
                  `active    ${result.current.version}: recall@1 ${r1(result.current.metrics)}, text precision@10 ${p10(result.current.metrics)}\n` +
                  result.decision.reasons.map((r) => `  - ${r}\n`).join('') +
                  (index
                    ? `promoted ${result.candidate.version}; index ${index.index} (${index.documents} documents)\n`
                    : `not promoted: ${result.current.version} stays active (the candidate is kept in \`imgsearch model list\`)\n`) +
                  (result.plot ? `metrics plot: ${result.plot}\n` : ''),
              );
            },
            { writer: true },
          );
        } finally {
          bar?.stop();
        }
      },
    );
}

/** The candidate's image-tower adaptation, when it has one (`--region-grid`, `--unlock-blocks`). */
function towerLine(training: { regionGrid?: number; regionWeight?: number; unlockedBlocks?: string[] }): string {
  const parts: string[] = [];
  if (training.regionGrid) parts.push(`block 13 pooled over ${training.regionGrid}×${training.regionGrid} regions (weight ${training.regionWeight ?? 1})`);
  if (training.unlockedBlocks?.length) parts.push(`${training.unlockedBlocks.join(', ')} fine-tuned`);
  return parts.length > 0 ? `  image tower: ${parts.join('; ')}\n` : '';
}
