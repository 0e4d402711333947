import type { Command } from 'commander';
import { printOutput, withRuntime } from '../options.js';

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('counts of indexed, pending and rejected images (with reasons), and the model')
    .option('--json', 'print {schemaVersion, indexed, pending, queues, rejected, ignored, deadLettered, model, index, faults} (as GET /api/status)')
    .action(async (opts: { json?: boolean }, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const { pipelineStatus } = await import('../../shared/services/status.js');
        const { readHomeLock } = await import('../../shared/adapters/local/home-lock.js');
        const { describeAnnStatus } = await import('../../shared/services/ann-maintenance.js');
        // The model's dimension and text tower come from its manifest: status never loads ONNX.
        const active = await runtime.registry.active();
        if (!active) throw new (await import('../../shared/errors.js')).NotFoundError('no model version is active (see `imgsearch model list`)');
        const status = await pipelineStatus({
          bus: runtime.bus,
          index: await runtime.catalog.live(),
          rejections: runtime.rejections,
          embedder: {
            modelVersion: active.version,
            dimension: active.manifest.dimension,
            hasTextTower: active.manifest.text !== undefined,
            manifest: active.manifest,
          },
          ignored: runtime.ignored,
        });
        const { driftStatus } = await import('../../shared/services/drift.js');
        const { localDriftDeps } = await import('../../shared/wiring/local.js');
        const drift = driftStatus(await localDriftDeps(runtime).state.read());
        if (opts.json) return printOutput('status', { ...status, drift });
        const writer = await readHomeLock(runtime.config.home);
        const lines = [
          ...(writer?.alive ? [`writer     \`${writer.holder.command}\` (pid ${writer.holder.pid}, since ${writer.holder.startedAt})`] : []),
          `model      ${status.model.version} (${status.model.dimension}-d, ${status.model.hasTextTower ? 'text search on' : 'no text tower'})`,
          `index      ${status.index ? `${status.index.name} (${status.index.modelVersion})` : 'none yet'}`,
          `ann index  ${describeAnnStatus(status.ann)}`,
          `indexed    ${status.indexed}`,
          `pending    ${status.pending}`,
          `rejected   ${status.rejected.count}`,
          ...Object.entries(status.rejected.byReason).map(([reason, n]) => `  ${reason}: ${n}`),
          ...status.rejected.items.slice(0, 20).map((r) => `  - ${r.uri}: ${r.reason} (${r.detail})`),
          `ignored    ${status.ignored.count}`,
          ...Object.entries(status.ignored.byReason).map(([reason, n]) => `  ${reason}: ${n}`),
          ...status.ignored.items.slice(0, 20).map((r) => `  - ${r.uri}: ${r.reason} (${r.detail})`),
          `dead-lettered ${status.deadLettered.count}`,
          ...status.deadLettered.items.slice(0, 20).map((d) => `  - [${d.topic}] ${d.reason} (attempts ${d.deliveryAttempt})`),
          `drift      ${drift.lastCheck ? `last check ${drift.lastCheck.checkedAt}: ${drift.lastCheck.decision.retrain ? 'retraining requested' : drift.lastCheck.decision.heldBack ? 'held back' : 'no retraining needed'}` : 'not checked yet'}`,
          ...(drift.lastRequest
            ? [`  last retraining request ${drift.lastRequest.at} (${drift.lastRequest.outcome}): ${drift.lastRequest.reasons.join('; ')}`]
            : []),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      });
    });
}
