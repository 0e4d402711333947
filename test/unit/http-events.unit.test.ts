import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { StatusEventStream } from '../../shared/http/events.js';
import type { UploadState } from '../../shared/http/upload.js';
import { silentLogger } from '../../shared/logger.js';

/**
 * The event stream's bounds without sockets (security review findings 5 and 6): a client that
 * does not read is dropped once its queue passes the bound, and the uploads followed are read a
 * bounded number at a time per tick.
 */

/**
 * A response whose socket never drains, following Node's Writable rules (nodejs.org/api/stream.html):
 * every write queues its bytes (`writableLength`), `write` returns false once the queue reaches
 * `writableHighWaterMark`, and `destroy()` ends it with 'close'.
 */
class StalledResponse extends EventEmitter {
  writableLength = 0;
  readonly writableHighWaterMark = 16 * 1024;
  destroyed = false;
  ended = false;
  writeHead(): this {
    return this;
  }
  write(chunk: string): boolean {
    if (this.destroyed) return false;
    this.writableLength += Buffer.byteLength(chunk);
    return this.writableLength < this.writableHighWaterMark;
  }
  end(): this {
    this.ended = true;
    return this;
  }
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      this.emit('close');
    }
    return this;
  }
}

const asResponse = (r: StalledResponse) => r as unknown as ServerResponse;

describe('StatusEventStream: a client that does not read (finding 5)', () => {
  it('is destroyed and dropped once more than maxBufferedBytes wait for it; a reading client stays', async () => {
    let n = 0;
    // Each status differs (so each tick pushes a frame) and is about 10 kB.
    const stream = new StatusEventStream(async () => ({ indexed: n++, pending: 0, filler: 'x'.repeat(10_000) }), silentLogger, null, {
      intervalMs: 3_600_000,
      heartbeatMs: 3_600_000,
      maxBufferedBytes: 64 * 1024,
    });
    const stalled = new StalledResponse();
    const reading = new StalledResponse();
    stream.attach(asResponse(stalled), '10.0.0.1');
    stream.attach(asResponse(reading), '10.0.0.2');
    for (let i = 0; i < 20; i++) {
      reading.writableLength = 0; // this one's socket takes everything
      await stream.tick();
    }
    expect(stalled.destroyed).toBe(true);
    expect(reading.destroyed).toBe(false);
    expect(stream.size).toBe(1);
    stream.close();
    expect(reading.ended).toBe(true);
  });
});

describe('StatusEventStream: uploads followed (finding 6)', () => {
  it('reads at most maxReadsPerTick upload states per tick, and every pending upload in turn', async () => {
    const reads: string[] = [];
    const stream = new StatusEventStream(
      async () => ({ indexed: 0, pending: 0 }),
      silentLogger,
      async (name): Promise<UploadState> => {
        reads.push(name);
        return { name, id: name, state: 'pending' };
      },
      { maxReadsPerTick: 10 },
    );
    const names = Array.from({ length: 35 }, (_, i) => `u${i}.png`);
    for (const name of names) stream.track(name);
    await stream.tick();
    expect(reads).toHaveLength(10);
    for (let i = 0; i < 3; i++) await stream.tick();
    expect(reads).toHaveLength(40);
    // Four ticks of 10 reach every one of the 35 (none waits for another's second read).
    expect(new Set(reads)).toEqual(new Set(names));
    stream.close();
  });
});
