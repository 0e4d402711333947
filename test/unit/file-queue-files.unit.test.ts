import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { tempDir } from '../helpers/cli.js';
import { recordingLogger } from '../helpers/recording-logger.js';

/**
 * What the queue does with files it did not write as it expects (a corrupt message, a stray file,
 * a write cut short by a crash): it moves them aside as dead letters with a reason, and carries on
 * serving the good messages. Real files in a temp dir; only `Date` is faked.
 */
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
/** A well-formed message id (time-sequence-pid-random). */
const ID = '001767323045000-00000001-00000042-0badf00d';
const DEAD_PID = '99999998';

let dir: string;
beforeEach(async () => {
  dir = await tempDir('queue-files');
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(T0);
});
afterEach(async () => {
  vi.useRealTimers();
  await fs.rm(dir, { recursive: true, force: true });
});

const sub = (s: 'ready' | 'inflight' | 'dead' | 'tmp', name = '') => path.join(dir, 't', s, name);
const plant = async (s: 'ready' | 'inflight' | 'dead' | 'tmp', name: string, content: string) => {
  await fs.mkdir(sub(s), { recursive: true });
  await fs.writeFile(sub(s, name), content);
};

describe('FileQueue with damaged files', () => {
  it('moves a corrupt message in ready/ to dead letters with its content and reason, and serves the others', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await q.publish('t', { n: 1 });
    await plant('ready', `${ID}.json`, '{"messageId": "cut sho');
    const got = await q.pull('t', { maxMessages: 5 });
    expect(got.map((d) => d.data)).toEqual([{ n: 1 }]);
    const dead = await q.listDeadLetters('t');
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({
      data: '{"messageId": "cut sho',
      attributes: { originalFile: `${ID}.json` },
      reason: expect.stringMatching(/^corrupt message file: .*JSON/),
      deliveryAttempt: 0,
      at: new Date(T0).toISOString(),
    });
    expect(dead[0]!.messageId).toMatch(new RegExp(`^corrupt-${T0}-[0-9a-f]{8}$`));
    // Nothing is left behind: not in ready/, and no raw copy beside the dead letter.
    expect(await fs.readdir(sub('ready'))).toEqual([]);
    expect(await fs.readdir(sub('dead'))).toEqual([`${dead[0]!.messageId}.json`]);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 1, deadLettered: 1 });
  });

  it('keeps the first 10,000 characters of a large corrupt file', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await plant('ready', `${ID}.json`, 'x'.repeat(25_000));
    await q.pull('t', { maxMessages: 1 });
    expect(await q.listDeadLetters('t')).toMatchObject([{ data: 'x'.repeat(10_000) }]);
  });

  it('also quarantines a message file that is JSON but not a message', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await plant('ready', `${ID}.json`, '{"data": 1}');
    expect(await q.pull('t', { maxMessages: 5 })).toEqual([]);
    expect(await q.listDeadLetters('t')).toMatchObject([{ data: '{"data": 1}', reason: expect.stringMatching(/^corrupt message file: [\s\S]*messageId/) }]);
  });

  it('moves a file with an unexpected name out of ready/ and inflight/, naming it in the reason', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await q.publish('t', { n: 1 });
    await plant('ready', 'notes.txt', 'hello');
    await plant('inflight', 'stray.json', '{}');
    const ownTmp = `x.json.${process.pid}.0123456789ab.tmp`; // a write of this process in progress
    await plant('inflight', ownTmp, '');
    const got = await q.pull('t', { maxMessages: 5 });
    expect(got.map((d) => d.data)).toEqual([{ n: 1 }]);
    const dead = await q.listDeadLetters('t');
    expect(dead.map((d) => [d.reason, d.data, d.attributes.originalFile]).sort()).toEqual([
      ['unexpected file name notes.txt in the queue', 'hello', 'notes.txt'],
      ['unexpected file name stray.json in the queue', '{}', 'stray.json'],
    ]);
    expect(await fs.readdir(sub('inflight'))).toContain(ownTmp);
    expect(await fs.readdir(sub('inflight'))).toHaveLength(2); // and the lease just taken
    // Acking works beside the stray write.
    await q.ack(
      't',
      got.map((d) => d.ackId),
    );
    expect(await fs.readdir(sub('inflight'))).toEqual([ownTmp]);
  });

  it('quarantines a leased message whose file was damaged when it is nacked, and when its lease lapses', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3, ackDeadlineSeconds: 5 });
    await q.publishBatch('t', [{ data: { n: 1 } }, { data: { n: 2 } }]);
    const [a, b] = await q.pull('t', { maxMessages: 2 });
    for (const name of await fs.readdir(sub('inflight'))) await fs.writeFile(sub('inflight', name), 'garbage');
    await q.nack('t', [a!.ackId], 'retry');
    expect(await q.listDeadLetters('t')).toMatchObject([{ data: 'garbage', reason: expect.stringMatching(/^corrupt message file: /) }]);
    vi.setSystemTime(T0 + 5_000);
    expect(await q.pull('t', { maxMessages: 5 })).toEqual([]);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 0, deadLettered: 2 });
    // A damaged lease is not counted as handed back.
    await q.publish('t', { n: 3 });
    await q.pull('t', { maxMessages: 1 });
    for (const name of await fs.readdir(sub('inflight'))) await fs.writeFile(sub('inflight', name), 'garbage');
    expect(await q.releaseAllLeases('t', 'restart')).toBe(0);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 0, deadLettered: 3 });
    await q.ack('t', [b!.ackId]); // gone already: nothing to do, no error
  });

  it('lists a dead letter it cannot read instead of hiding it, and ignores files that are not dead letters', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await q.publish('t', { n: 1 });
    const [d] = await q.pull('t', { maxMessages: 1 });
    await q.deadLetter('t', [d!.ackId], 'bad');
    await plant('dead', 'zz.jsonl-copy.json', '{ not json');
    await plant('dead', 'readme.md', 'not a dead letter');
    const dead = await q.listDeadLetters('t');
    expect(dead).toHaveLength(2);
    expect(dead[0]).toMatchObject({ messageId: d!.messageId, reason: 'bad' });
    expect(dead[1]).toEqual({
      messageId: 'zz.jsonl-copy',
      data: null,
      attributes: {},
      reason: expect.stringMatching(/^unreadable dead letter: /),
      deliveryAttempt: 0,
      at: '',
    });
    expect(await q.stats('t')).toMatchObject({ deadLettered: 2 });
    expect(await q.listDeadLetters('none')).toEqual([]);
  });
});

describe('FileQueue staging clean-up at start', () => {
  it('removes staged files and interrupted writes of dead processes, keeps its own and every message', async () => {
    const own = String(process.pid % 1e8).padStart(8, '0');
    const staged = (pid: string) => `001767323045000-00000001-${pid}-0badf00d.json`;
    await plant('tmp', staged(DEAD_PID), '{"cut');
    await plant('tmp', staged('00000000'), '{"cut');
    await plant('tmp', staged(own), '{}');
    await plant('tmp', 'hand-made.json', '{}');
    await plant('inflight', `${ID}@0123456789ab@1.json.${Number(DEAD_PID)}.0123456789ab.tmp`, '');
    await plant('inflight', `${ID}@0123456789ab@1.json.${process.pid}.0123456789ab.tmp`, '');
    await plant('dead', `x.json.${Number(DEAD_PID)}.0123456789ab.tmp`, '');
    await plant('dead', `${ID}.json`, JSON.stringify({ messageId: ID, data: 1, publishTime: '', reason: 'r', at: '' }));
    const { logger, lines } = recordingLogger();
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3, logger });
    expect(await q.sweepStaging('t')).toBe(5);
    expect(await fs.readdir(sub('tmp'))).toEqual([staged(own)]);
    expect(await fs.readdir(sub('inflight'))).toEqual([`${ID}@0123456789ab@1.json.${process.pid}.0123456789ab.tmp`]);
    expect(await fs.readdir(sub('dead'))).toEqual([`${ID}.json`]);
    expect(lines).toContainEqual(
      expect.objectContaining({ severity: 'WARNING', topic: 't', removed: 5, message: 'removed staging files left by failed or interrupted writes' }),
    );
    expect(await q.sweepStaging('t')).toBe(0);
    expect(lines.filter((l) => 'removed' in l)).toHaveLength(1); // nothing to report the second time
  });

  it('cleans up once per topic before the first publish or pull, and tries again after a failed clean-up', async () => {
    const { logger, lines } = recordingLogger();
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3, logger });
    const stagedDead = `001767323045000-00000001-${DEAD_PID}-0badf00d.json`;
    await plant('tmp', stagedDead, '{"cut');
    await q.publish('t', { n: 1 });
    expect(await fs.readdir(sub('tmp'))).toEqual([]);
    await plant('tmp', stagedDead, '{"cut');
    await q.publish('t', { n: 2 });
    await q.pull('t', { maxMessages: 5 });
    expect(await fs.readdir(sub('tmp'))).toEqual([stagedDead]); // not swept twice by one process

    // A clean-up that fails (tmp/ is not a folder) is reported and does not stop pulling.
    await fs.mkdir(path.join(dir, 'u'), { recursive: true });
    await fs.writeFile(path.join(dir, 'u', 'tmp'), 'not a folder');
    expect(await q.pull('u', { maxMessages: 1 })).toEqual([]);
    const warning = lines.find((l) => l.message === 'could not clean up staging files left by a failed write');
    expect(warning).toMatchObject({ severity: 'WARNING', topic: 'u', err: expect.objectContaining({ code: 'ENOTDIR' }) });
    await fs.rm(path.join(dir, 'u', 'tmp'));
    await fs.mkdir(path.join(dir, 'u', 'tmp'));
    await fs.writeFile(path.join(dir, 'u', 'tmp', stagedDead), '{"cut');
    await q.pull('u', { maxMessages: 1 });
    expect(await fs.readdir(path.join(dir, 'u', 'tmp'))).toEqual([]);
  });
});

describe('FileQueue logs', () => {
  it('warns when a lease lapses and when a message is dead-lettered, with the message id and reason', async () => {
    const { logger, lines } = recordingLogger();
    const q = new FileQueue(dir, { maxDeliveryAttempts: 2, ackDeadlineSeconds: 1, logger });
    const id = await q.publish('t', { n: 1 });
    await q.pull('t', { maxMessages: 1 });
    vi.setSystemTime(T0 + 1_000);
    const [d2] = await q.pull('t', { maxMessages: 1 });
    expect(lines).toContainEqual(expect.objectContaining({ severity: 'WARNING', topic: 't', messageId: id, message: 'lease expired: redelivering' }));
    await q.nack('t', [d2!.ackId], 'still failing');
    expect(lines).toContainEqual(
      expect.objectContaining({ severity: 'WARNING', topic: 't', messageId: id, reason: 'still failing', deliveries: 2, message: 'message dead-lettered' }),
    );
    expect(lines.filter((l) => l.message === 'message dead-lettered')).toHaveLength(1); // not for the lapse handed back to ready/
    await plant('ready', 'junk', 'x');
    await q.pull('t', { maxMessages: 1 });
    expect(lines).toContainEqual(
      expect.objectContaining({
        severity: 'ERROR',
        topic: 't',
        file: 'junk',
        reason: 'unexpected file name junk in the queue',
        message: 'corrupt queue file moved to dead letters',
      }),
    );
  });
});
