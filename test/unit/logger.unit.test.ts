import { Writable } from 'node:stream';
import { ESLint } from 'eslint';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { createLogger } from '../../shared/logger.js';
import { cloudLogger } from '../../shared/wiring/cloud.js';

/** Logs carry the Error object (stack, cause chain), in Cloud Logging's shape for the cloud logger. */
function capture(): { stream: Writable; lines: () => Record<string, any>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
  };
}

const failure = () => new Error('upsert failed', { cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:9200'), { code: 'ECONNREFUSED' }) });

describe('error logging', () => {
  afterEach(() => vi.restoreAllMocks());

  test('the local logger writes the error with its stack and cause chain', () => {
    const out = capture();
    createLogger({ level: 'info', destination: out.stream }).error({ err: failure(), count: 3 }, 'index upsert failed');
    const [line] = out.lines();
    expect(line).toMatchObject({ severity: 'ERROR', message: 'index upsert failed', count: 3, err: { type: 'Error', message: 'upsert failed' } });
    expect(line!.err.stack).toMatch(/^Error: upsert failed\n\s+at /);
    expect(line!.err.cause).toMatchObject({ message: 'connect ECONNREFUSED 10.0.0.5:9200', code: 'ECONNREFUSED' });
  });

  test("the cloud logger uses Google's pino config: stack_trace for Error Reporting, service context, no metadata lookup", () => {
    const written: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
    vi.stubEnv('LOG_LEVEL', 'info');
    vi.stubEnv('GCP_PROJECT', 'my-project-123');
    cloudLogger('upsertVectors').error({ err: failure() }, 'index upsert failed');
    vi.unstubAllEnvs();
    const line = JSON.parse(written.join('').trim().split('\n').pop()!);
    expect(line).toMatchObject({ severity: 'ERROR', message: 'index upsert failed', serviceContext: { service: 'upsertVectors' } });
    expect(line.stack_trace).toMatch(/^Error: upsert failed\n\s+at /);
    expect(line.err.cause.message).toBe('connect ECONNREFUSED 10.0.0.5:9200');
    expect(line['logging.googleapis.com/insertId']).toEqual(expect.any(String));
  });

  test('the lint rule refuses logging only the message of an error', async () => {
    const eslint = new ESLint({ cwd: process.cwd() });
    const code =
      "import { errorMessage } from '../errors.js';\nexport function f(logger: { error(o: object, m: string): void }, err: unknown) {\n  logger.error({ err: errorMessage(err) }, 'failed');\n}\n";
    const [result] = await eslint.lintText(code, { filePath: 'shared/services/x.ts' });
    expect(result!.messages.map((m) => m.message)).toEqual([expect.stringMatching(/log the Error object/)]);
  });
});
