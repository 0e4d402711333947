import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/cli.js';

/**
 * `imgsearch model quantize` / `model compact`: bad flags are refused before any model is opened,
 * with exit code 2 and a line naming the flag (the CLI's usage-error convention).
 */
describe('model quantize and model compact refuse bad input', () => {
  it.each([
    [['model', 'quantize', '--calibration', 'no-such-folder'], /--calibration no-such-folder: not a folder/],
    [['model', 'quantize', '--images', '0'], /--images.*expected a whole number from 1 to 100000/],
    [['model', 'quantize', '--method', 'entropy'], /--method.*Allowed choices are percentile, minmax/],
    [['model', 'quantize', '--percentile', '50'], /--percentile.*between 90 and 100/],
    [['model', 'compact'], /required option '--dims <n>'/],
    [['model', 'compact', '--dims', '1'], /--dims.*expected a whole number from 2 to 4096/],
  ])('%j', async (args, message) => {
    const work = await tempDir('variants-cli');
    const res = await runCli(['--home', path.join(work, 'home'), '--init', ...args], { cwd: work });
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toMatch(message);
    expect(res.stdout).toBe('');
  });
});
