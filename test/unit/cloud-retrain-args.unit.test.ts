import { describe, expect, it } from 'vitest';
import { ParseError } from '../../shared/errors.js';
import { retrainArgs } from '../../shared/wiring/cloud-retrain.js';

/**
 * The cloud retrain job's options (jobs/retrain/main.ts): the `args` of a retrain request (the
 * Scheduler's `iss:retrain.args`, a drift check's) as `--key=value` flags over RETRAIN_* variables.
 */
const none = { RETRAIN_SEED: undefined, RETRAIN_EPOCHS: undefined, RETRAIN_MARGIN: undefined, RETRAIN_HELD_OUT: undefined, RETRAIN_HIDDEN: undefined };

describe('retrain job arguments', () => {
  it('maps flags (kebab or camel case) to retrain options, the trainer ones under training', () => {
    expect(retrainArgs(['--epochs=8', '--held-out=0.2', '--hidden=1024'], none)).toEqual({
      epochs: 8,
      heldOutFraction: 0.2,
      training: { hidden: 1024 },
    });
    expect(retrainArgs(['--heldOut=0.3'], none)).toEqual({ heldOutFraction: 0.3 });
    expect(retrainArgs([], none)).toEqual({});
  });

  it('takes RETRAIN_* where no flag is given, the flag where both are', () => {
    expect(retrainArgs(['--epochs=3'], { ...none, RETRAIN_EPOCHS: 20, RETRAIN_SEED: 7, RETRAIN_HIDDEN: 256 })).toEqual({
      epochs: 3,
      seed: 7,
      training: { hidden: 256 },
    });
  });

  it('refuses unknown flags, bare words and values out of range, naming them', () => {
    expect(() => retrainArgs(['--layers=3'], none)).toThrow(ParseError);
    expect(() => retrainArgs(['--layers=3'], none)).toThrow(/unknown option --layers; known: seed, epochs, margin, heldOut, hidden/);
    // The cloud feature shards keep no block activations: the flag is refused, not ignored.
    expect(() => retrainArgs(['--unlock-blocks=2'], none)).toThrow(/unknown option --unlock-blocks/);
    expect(() => retrainArgs(['--region-grid=3'], none)).toThrow(/unknown option --region-grid/);
    expect(() => retrainArgs(['epochs'], none)).toThrow(/pass options as --key=value/);
    expect(() => retrainArgs(['--hidden=0'], none)).toThrow(ParseError);
    expect(() => retrainArgs(['--hidden=0'], none)).toThrow(/hidden/);
    expect(() => retrainArgs(['--epochs=many'], none)).toThrow(/epochs/);
  });
});
