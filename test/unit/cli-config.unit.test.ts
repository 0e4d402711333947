import { describe, expect, it } from 'vitest';
import { parseEnv, unknownVariableWarnings } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';
import { runCli, tempDir } from '../helpers/cli.js';

/**
 * Issue 14, point 11: config errors give a fix for every variable, and a misspelled `IMGSEARCH_*`
 * variable is not silently ignored.
 */
function problem(env: Record<string, string>): string {
  try {
    parseEnv(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(env)} to be refused`);
}

describe('config errors name the variable and the fix', () => {
  it.each([
    ['IMGSEARCH_HOME', ''],
    ['IMGSEARCH_BUCKET_DIR', ''],
    ['IMGSEARCH_HOST', ''],
    ['IMGSEARCH_PORT', '70000'],
    ['IMGSEARCH_BATCH_SIZE', '0'],
    ['IMGSEARCH_MAX_PIXELS', '0'],
    ['IMGSEARCH_MAX_BYTES', 'lots'],
    ['IMGSEARCH_MAX_ATTEMPTS', '0'],
    ['IMGSEARCH_ACK_DEADLINE_SECONDS', '1'],
    ['IMGSEARCH_THREADS', '-1'],
    ['IMGSEARCH_INDEX', 'faiss'],
    ['IMGSEARCH_ANN_MIN_ROWS', '10'],
    ['IMGSEARCH_ANN_TYPE', 'flat'],
    ['IMGSEARCH_ANN_CHECK_SECONDS', '0'],
    ['OPENSEARCH_URL', 'localhost:9200'],
    ['OPENSEARCH_INDEX_ALIAS', 'Images!'],
    ['LOG_LEVEL', 'loud'],
  ])('%s=%j: one line with the variable and how to fix it', (name, value) => {
    const message = problem({ [name]: value });
    const lines = message.split('\n');
    expect(lines[0]).toBe('Invalid configuration:');
    expect(lines).toHaveLength(2);
    // `- NAME="value": what is wrong (the fix)`: every variable has a fix in parentheses.
    expect(lines[1]).toMatch(new RegExp(`^- ${name}(=".*")?[^(]*\\(.+\\)$`));
    expect(lines[1]).toContain(name);
  });

  it('the three the issue named get their range and an example', () => {
    expect(problem({ IMGSEARCH_THREADS: '-1' })).toContain('(set a whole number of threads from 0 (one per core) to 256, e.g. IMGSEARCH_THREADS=0)');
    expect(problem({ IMGSEARCH_MAX_PIXELS: '0' })).toContain('e.g. IMGSEARCH_MAX_PIXELS=50000000)');
    expect(problem({ IMGSEARCH_ACK_DEADLINE_SECONDS: '1' })).toContain('from 2 to 600, e.g. IMGSEARCH_ACK_DEADLINE_SECONDS=60)');
  });
});

describe('misspelled IMGSEARCH_* variables', () => {
  it('are named with the closest known variable; known and foreign variables are not', () => {
    expect(
      unknownVariableWarnings({
        IMGSEARCH_THREDS: '2',
        IMGSEARCH_BACH_SIZE: '8',
        IMGSEARCH_HOME: 'h',
        IMGSEARCH_DEBUG: '1',
        IMGSEARCH_ANN_TYPE: 'ivf_pq',
        HOME: '/root',
      }),
    ).toEqual([
      'IMGSEARCH_BACH_SIZE is not a setting and is ignored; did you mean IMGSEARCH_BATCH_SIZE?',
      'IMGSEARCH_THREDS is not a setting and is ignored; did you mean IMGSEARCH_THREADS?',
    ]);
  });

  it('the CLI prints the warning on stderr before it reads the configuration', async () => {
    const work = await tempDir('cli-config');
    const r = await runCli(['status'], { cwd: work, env: { IMGSEARCH_THREDS: '2', IMGSEARCH_PORT: 'abc' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('imgsearch: warning: IMGSEARCH_THREDS is not a setting and is ignored; did you mean IMGSEARCH_THREADS?\n');
    expect(r.stderr).toContain('- IMGSEARCH_PORT="abc"');
  }, 60_000);
});
