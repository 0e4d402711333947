import { createHash } from 'node:crypto';

/**
 * Deterministic splits by document id: the same image always falls on the same side, whatever the
 * order or size of the corpus, so a held-out image is never trained on by any retraining run.
 */
export function idFraction(id: string, salt: string): number {
  const digest = createHash('sha256').update(`${salt}\u0000${id}`).digest();
  return digest.readUInt32BE(0) / 0x1_0000_0000;
}

export function isHeldOut(id: string, fraction: number, salt = 'held-out-v1'): boolean {
  if (!(fraction >= 0 && fraction < 1)) throw new RangeError(`held-out fraction must be in [0, 1), got ${fraction}`);
  return idFraction(id, salt) < fraction;
}
