import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from './options.js';
import { registerDatasetCommand } from './commands/dataset.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerIndexCommands } from './commands/index-admin.js';
import { registerIngestCommand } from './commands/ingest.js';
import { registerSearchCommand } from './commands/search.js';
import { registerStatusCommand } from './commands/status.js';
import { registerUpCommand } from './commands/up-command.js';
import { registerModelCommands } from './commands/model.js';
import { registerRetrainCommand } from './commands/retrain.js';
import { registerTuneCommand } from './commands/tune.js';
import { registerRunsCommands } from './commands/runs.js';
import { registerEvalCommand } from './commands/eval.js';
import { registerLabelsCommand } from './commands/labels.js';
import { registerMapCommand } from './commands/map.js';
import { registerCompletionCommand } from './commands/completion.js';
import { registerRmCommand } from './commands/rm.js';
import { registerMonitorCommand } from './commands/monitor.js';
import { registerDriftCommand } from './commands/drift.js';
import { EXIT, installPipeGuard } from './process.js';

/**
 * `imgsearch`: the local product and its admin commands. Output on stdout, logs and progress on
 * stderr. Command modules register their flags only; what an action needs (the wiring, models,
 * LanceDB) is imported when it runs, so `--help`, `--version` and usage errors start fast.
 *
 * Exit codes: 0 done; 1 failed (one line on stderr); 2 usage error (one line + where the help is);
 * 130/143 interrupted by SIGINT/SIGTERM.
 */
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export function buildProgram(): Command {
  const program = new Command('imgsearch')
    .description('Semantic image search over a folder (local) or a GCS bucket (cloud).')
    .version(pkg.version, '-V, --version', 'print the version')
    .addOption(new Option('--home <dir>', 'data directory for all local state (must exist unless --init)').env('IMGSEARCH_HOME'))
    .addOption(new Option('--init', 'create the --home data directory if it does not exist'))
    .addOption(new Option('--index <engine>', 'vector index').choices(['lancedb', 'opensearch']).env('IMGSEARCH_INDEX'))
    .addOption(new Option('--opensearch-url <url>', 'OpenSearch cluster URL (with --index opensearch)').env('OPENSEARCH_URL'))
    .addOption(
      new Option('--log-level <level>', 'log level (logs go to stderr)')
        .choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
        .env('LOG_LEVEL'),
    );

  registerUpCommand(program);
  registerIngestCommand(program);
  registerSearchCommand(program);
  registerStatusCommand(program);
  registerLabelsCommand(program);
  registerMapCommand(program);
  registerRmCommand(program);
  registerDatasetCommand(program);
  registerIndexCommands(program);
  registerModelCommands(program);
  registerRetrainCommand(program);
  registerTuneCommand(program);
  registerRunsCommands(program);
  registerEvalCommand(program);
  registerDoctorCommand(program);
  registerMonitorCommand(program);
  registerDriftCommand(program);
  registerCompletionCommand(program);

  // Usage errors: one line, then where the help is; never the whole help.
  const configure = (cmd: Command) => {
    cmd.exitOverride().showHelpAfterError(`see \`${fullName(cmd)} --help\``);
    cmd.configureOutput({ outputError: (str, write) => write(`imgsearch: ${str.replace(/^error: /, '')}`) });
    for (const sub of cmd.commands) configure(sub);
  };
  configure(program);
  program.hook('preAction', (_root, action) => {
    running = action;
  });
  return program;
}

let running: Command | null = null;

export function fullName(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export async function main(argv: string[]): Promise<void> {
  installPipeGuard();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version were printed; usage errors were printed with their help pointer.
      process.exitCode = err.exitCode === 0 ? 0 : EXIT.usage;
      return;
    }
    const { errorMessage, AppError } = await import('../shared/errors.js');
    if (err instanceof UsageError) {
      process.stderr.write(`imgsearch: ${err.message}\nsee \`${fullName(running ?? program)} --help\`\n`);
      process.exitCode = EXIT.usage;
      return;
    }
    process.stderr.write(`imgsearch: ${oneLine(errorMessage(err))}\n`);
    if (err instanceof AppError && process.env.IMGSEARCH_DEBUG) process.stderr.write(`${err.stack}\n`);
    process.exitCode = EXIT.failed;
  }
  // A failed command never hangs on what it left open (a watcher, a worker, a socket).
  if (process.exitCode) setTimeout(() => process.exit(), 500).unref();
}

/** Multi-line messages (a config error's list) stay readable; anything else is one line. */
function oneLine(message: string): string {
  return message.trimEnd();
}

await main(process.argv);
