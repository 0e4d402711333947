import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ActivityReporter, fileLogger, type ActivityCounts } from '../activity.js';
import { configFrom, openRuntime, parseIntIn, parseNonEmpty } from '../options.js';
import { EXIT, restoreTerminal } from '../process.js';

/**
 * `imgsearch up`: flags only; what it runs is cli/commands/up.ts:startLocalProduct, loaded when it
 * starts (so `--help` stays fast).
 */
export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('watch the bucket folder, run the pipeline, and serve the web page and API')
    .option('--bucket <dir>', 'folder watched as the bucket (IMGSEARCH_BUCKET_DIR)', parseNonEmpty('--bucket'))
    .option('--port <port>', 'HTTP port, 0 for any free one (IMGSEARCH_PORT)', parseIntIn(0, 65535))
    .option('--host <host>', 'HTTP host (IMGSEARCH_HOST)', parseNonEmpty('--host'))
    .option('--open', 'open the page in a browser once it is up')
    .action(async (opts: { bucket?: string; port?: number; host?: string; open?: boolean }, command: Command) => {
      const config = await configFrom(command, {
        IMGSEARCH_BUCKET_DIR: opts.bucket,
        IMGSEARCH_PORT: opts.port === undefined ? undefined : String(opts.port),
        IMGSEARCH_HOST: opts.host,
      });
      await fs.mkdir(config.bucketDir, { recursive: true });
      // Live activity: in a terminal a status line (logs of each file go to a log file, errors
      // print above the line); otherwise a summary line on stdout when the counts change.
      const tty = process.stderr.isTTY === true;
      const logFile = path.join(config.home, 'logs', 'up.log');
      let counts: (() => Promise<ActivityCounts>) | null = null;
      const activity = new ActivityReporter({ tty, read: () => counts!(), hint: `(Ctrl-C stops; log: ${logFile})` });
      const logs = tty ? await fileLogger(logFile, config.logLevel, activity.logStream()) : null;
      const runtime = await openRuntime(command, { writer: true, config, ...(logs ? { logger: logs.logger } : {}) });
      counts = async () => {
        const { TOPICS } = await import('../../shared/contracts.js');
        const [indexed, events, embeddings, rejected, ignored] = await Promise.all([
          runtime.liveIndex().then((index) => index.count()),
          runtime.bus.stats(TOPICS.imageEvents),
          runtime.bus.stats(TOPICS.embeddings),
          runtime.rejections.count(),
          runtime.ignored.count(),
        ]);
        return { indexed, pending: events.ready + events.inflight + embeddings.ready + embeddings.inflight, rejected, ignored };
      };
      const { startLocalProduct } = await import('./up.js');
      let product;
      try {
        product = await startLocalProduct(runtime);
      } catch (err) {
        await runtime.close().catch(() => undefined);
        throw await listenError(err, config.host, config.port);
      }
      process.stdout.write(`imgsearch is up: ${product.url}  (watching ${config.bucketDir}, model ${runtime.model.current().modelVersion})\n`);
      if (opts.open) openBrowser(product.url);
      activity.start();
      let stopping = false;
      const shutdown = (signal: NodeJS.Signals) => {
        activity.stop();
        restoreTerminal();
        if (stopping) process.exit(signal === 'SIGTERM' ? EXIT.sigterm : EXIT.sigint);
        stopping = true;
        void (async () => {
          await product.stop();
          await runtime.close();
          await logs?.close();
          process.exit(0);
        })();
      };
      process.on('SIGINT', shutdown);
      process.on('SIGTERM', shutdown);
    });
}

/** EADDRINUSE / EADDRNOTAVAIL / EACCES: one line naming the address and the flag to change. */
async function listenError(err: unknown, host: string, port: number): Promise<unknown> {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const { AppError } = await import('../../shared/errors.js');
  const where = `${host}:${port}`;
  if (code === 'EADDRINUSE')
    return new AppError(`cannot listen on ${where}: the port is in use (choose another with --port, or 0 for any free one)`, { cause: err });
  if (code === 'EADDRNOTAVAIL') return new AppError(`cannot listen on ${where}: no network interface has that address (check --host)`, { cause: err });
  if (code === 'EACCES')
    return new AppError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges; choose another --port)`, { cause: err });
  return err;
}

function openBrowser(url: string): void {
  void import('node:child_process').then(({ spawn }) => {
    const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
    child.on('error', () => process.stderr.write(`imgsearch: could not open a browser (${cmd}); open ${url}\n`));
    child.unref();
  });
}
