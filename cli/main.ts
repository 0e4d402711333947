import { Command, Option } from 'commander';
import { ConfigError, errorMessage, AppError } from '../shared/errors.js';
import { registerDatasetCommand } from './commands/dataset.js';
import { registerIndexCommands } from './commands/index-admin.js';
import { registerIngestCommand } from './commands/ingest.js';
import { registerSearchCommand } from './commands/search.js';
import { registerStatusCommand } from './commands/status.js';
import { registerUpCommand } from './commands/up.js';
import { registerModelCommands } from './commands/model.js';
import { registerRetrainCommand } from './commands/retrain.js';
import { registerEvalCommand } from './commands/eval.js';

/** `imgsearch`: the local product and its admin commands. Output on stdout, logs on stderr. */
const program = new Command('imgsearch')
  .description('Semantic image search over a folder (local) or a GCS bucket (cloud).')
  .showHelpAfterError()
  .addOption(new Option('--home <dir>', 'data directory for all local state').env('IMGSEARCH_HOME'))
  .addOption(new Option('--index <engine>', 'vector index').choices(['lancedb', 'opensearch']).env('IMGSEARCH_INDEX'))
  .addOption(new Option('--opensearch-url <url>', 'OpenSearch cluster URL (with --index opensearch)').env('OPENSEARCH_URL'))
  .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').env('LOG_LEVEL'));

registerUpCommand(program);
registerIngestCommand(program);
registerSearchCommand(program);
registerStatusCommand(program);
registerDatasetCommand(program);
registerIndexCommands(program);
registerModelCommands(program);
registerRetrainCommand(program);
registerEvalCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.stderr.write(`imgsearch: ${errorMessage(err)}\n`);
  if (err instanceof AppError && process.env.IMGSEARCH_DEBUG) process.stderr.write(`${err.stack}\n`);
  process.exitCode = err instanceof ConfigError ? 2 : 1;
}
