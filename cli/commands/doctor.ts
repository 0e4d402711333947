import type { Command } from 'commander';
import { EXIT } from '../process.js';
import { openRuntime, printOutput } from '../options.js';

/** `imgsearch doctor [--repair]`: checks a data directory (shared/services/doctor.ts) and, with --repair, fixes what it can. */
export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('check the data directory: model/index mismatch, stale leases, orphaned temp files, duplicate feature rows')
    .option('--repair', 'repair what can be repaired (takes the writer lock)')
    .option('--json', 'print {schemaVersion, home, findings: [{kind, detail, repaired}]}')
    .action(async (opts: { repair?: boolean; json?: boolean }, command: Command) => {
      const runtime = await openRuntime(command, { writer: opts.repair === true });
      try {
        const { diagnose } = await import('../../shared/services/doctor.js');
        const { readHomeLock } = await import('../../shared/adapters/local/home-lock.js');
        const writer = await readHomeLock(runtime.config.home);
        const otherWriterAlive = writer !== null && writer.alive && writer.holder.pid !== process.pid;
        const findings = await diagnose(
          {
            home: runtime.config.home,
            registry: runtime.registry,
            catalog: runtime.catalog,
            features: runtime.features,
            queue: runtime.bus,
            logger: runtime.logger,
            otherWriterAlive,
          },
          { repair: opts.repair === true },
        );
        if (opts.json) await printOutput('doctor', { home: runtime.config.home, findings });
        else if (findings.length === 0) process.stdout.write(`no problems found in ${runtime.config.home}\n`);
        else {
          for (const f of findings) process.stdout.write(`${f.kind}: ${f.detail}${f.repaired ? `\n  repaired: ${f.repaired}` : ''}\n`);
          if (!opts.repair) process.stdout.write('run `imgsearch doctor --repair` to repair\n');
        }
        if (findings.some((f) => f.repaired === null)) process.exitCode = EXIT.failed;
      } finally {
        await runtime.close();
      }
    });
}
