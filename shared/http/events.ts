import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from '../logger.js';
import { OverloadedError } from './limits.js';
import type { UploadState } from './upload.js';

/** What `GET /api/events` pushes as `event: status`: the status with the figures only a watcher over time can give. */
export interface StatusEvent<S> {
  status: S;
  /** Documents indexed per second over the last `rateWindowMs` (negative while documents are removed); null until two readings. */
  ingestRate: number | null;
  /**
   * Freshness lag estimated from the backlog (seconds): pending items ÷ ingest rate, i.e. how long
   * an image added now waits before it is searchable; 0 with nothing pending, null while nothing
   * moves. Measured lags of page uploads come with `event: upload` (lagMs).
   */
  estimatedLagSeconds: number | null;
}

export interface EventStreamOptions {
  /** How often the status is read while someone listens (default 1 s). */
  intervalMs?: number;
  /** A comment line this often keeps proxies and the socket timeout from closing a quiet stream (default 15 s). */
  heartbeatMs?: number;
  /** Streams open at once (default 16); more answer 503 with Retry-After. */
  maxClients?: number;
  /** Streams open at once from one client address (default 4; security review finding 5); more answer 503 with Retry-After. */
  maxPerClient?: number;
  /**
   * Bytes that may wait unsent for one stream (default 1 MiB): a client that does not read is
   * destroyed and dropped past this, instead of the server buffering for it without bound.
   */
  maxBufferedBytes?: number;
  /** Upload states read per tick (default 20; the least recently read first), however many uploads are followed (finding 6). */
  maxReadsPerTick?: number;
  /** The window of the ingest rate (default 10 s). */
  rateWindowMs?: number;
  /** Uploads followed at once (default 200, the oldest dropped first) and for how long (default 30 min). */
  maxTracked?: number;
  trackMs?: number;
  now?: () => number;
}

/** The figures a status must have for the rates (every PipelineStatus has them). */
interface Counts {
  indexed: number;
  pending: number;
  asOf?: string;
}

/**
 * Server-sent events for the page: one reader of the status for every open page (read every
 * `intervalMs` only while a stream is open), each change pushed as `event: status`; uploads made
 * through the page followed until searchable or rejected (`event: upload`). Streams are bounded,
 * kept alive by a heartbeat comment, and ended when the app closes (preClose, so the server's
 * close does not wait for them).
 */
export class StatusEventStream<S extends Counts> {
  /** Each open stream and the client address it counts against. */
  private readonly clients = new Map<ServerResponse, string>();
  private readonly perClient = new Map<string, number>();
  private readonly samples: { at: number; indexed: number }[] = [];
  private readonly tracked = new Map<string, { at: number; state: UploadState['state'] | null; frame: string | null; readAt: number }>();
  /** Counts state reads, so the least recently read uploads go first (`readAt`). */
  private reads = 0;
  private lastStatus: string | null = null;
  private lastEvent: StatusEvent<S> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private ticking = false;
  private closed = false;
  private readonly o: Required<Omit<EventStreamOptions, 'now'>> & { now: () => number };

  constructor(
    private readonly status: () => Promise<S>,
    private readonly logger: Logger,
    private readonly uploadStateOf: ((name: string) => Promise<UploadState>) | null,
    options: EventStreamOptions = {},
  ) {
    this.o = {
      intervalMs: options.intervalMs ?? 1_000,
      heartbeatMs: options.heartbeatMs ?? 15_000,
      maxClients: options.maxClients ?? 16,
      maxPerClient: options.maxPerClient ?? 4,
      maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
      maxReadsPerTick: options.maxReadsPerTick ?? 20,
      rateWindowMs: options.rateWindowMs ?? 10_000,
      maxTracked: options.maxTracked ?? 200,
      trackMs: options.trackMs ?? 30 * 60_000,
      now: options.now ?? Date.now,
    };
  }

  get size(): number {
    return this.clients.size;
  }

  /** Follows an upload until it is indexed, rejected or ignored (pushed as `event: upload`). */
  track(name: string): void {
    this.tracked.delete(name);
    this.tracked.set(name, { at: this.o.now(), state: null, frame: null, readAt: 0 });
    while (this.tracked.size > this.o.maxTracked) this.tracked.delete(this.tracked.keys().next().value!);
  }

  /** Registers `GET /api/events` on `app` and ends every stream before the app closes. */
  register(app: FastifyInstance): void {
    app.get('/api/events', async (req, reply) => {
      if (this.closed) throw new OverloadedError('event streams (the server is shutting down)', 5);
      if (this.clients.size >= this.o.maxClients) throw new OverloadedError('event streams', 10);
      if ((this.perClient.get(req.ip) ?? 0) >= this.o.maxPerClient) throw new OverloadedError('event streams from this client', 10);
      this.open(reply, req.ip);
      req.raw.on('close', () => this.drop(reply.raw));
    });
    app.addHook('preClose', async () => this.close());
  }

  private open(reply: FastifyReply, client: string): void {
    // The headers set so far (security headers by helmet) go out with the stream's own.
    const headers = { ...reply.getHeaders() } as Record<string, string>;
    reply.hijack();
    this.attach(reply.raw, client, headers);
  }

  /**
   * Streams the events on `res` (what `GET /api/events` does once it has taken over the response),
   * counted against `client`'s streams; the stream is dropped when `res` closes.
   */
  attach(res: ServerResponse, client: string, headers: Record<string, string> = {}): void {
    res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    // Reconnect after 2 s if the stream drops; a first comment flushes the headers at once.
    this.clients.set(res, client);
    this.perClient.set(client, (this.perClient.get(client) ?? 0) + 1);
    res.on('close', () => this.drop(res));
    this.write(res, 'retry: 2000\n: connected\n\n');
    if (this.lastEvent) this.send(res, 'status', this.lastEvent);
    for (const t of this.tracked.values()) if (t.frame) this.write(res, t.frame);
    this.start();
  }

  private drop(res: ServerResponse): void {
    const client = this.clients.get(res);
    if (client === undefined) return;
    this.clients.delete(res);
    const left = (this.perClient.get(client) ?? 1) - 1;
    if (left > 0) this.perClient.set(client, left);
    else this.perClient.delete(client);
    if (this.clients.size === 0) this.stop();
  }

  /** Writes a frame; a stream with more than maxBufferedBytes waiting (its client does not read) is destroyed and dropped. */
  private write(res: ServerResponse, frame: string): void {
    if (!this.clients.has(res)) return;
    res.write(frame);
    if (res.writableLength > this.o.maxBufferedBytes) {
      this.logger.warn({ client: this.clients.get(res), buffered: res.writableLength }, 'event stream client does not read: stream dropped');
      this.drop(res);
      res.destroy();
    }
  }

  private start(): void {
    if (this.timer) {
      // A new page gets a reading at once, not at the next tick.
      void this.tick();
      return;
    }
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs);
    this.heartbeat = setInterval(() => this.broadcastRaw(': heartbeat\n\n'), this.o.heartbeatMs);
    void this.tick();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.timer = null;
    this.heartbeat = null;
    // A stream opened later starts its rate from scratch: old samples would average over the gap.
    this.samples.length = 0;
  }

  /** One reading: status pushed when it changed; each followed upload pushed when its state changed. */
  async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      const status = await this.status();
      const now = this.o.now();
      this.samples.push({ at: now, indexed: status.indexed });
      while (this.samples.length > 2 && now - this.samples[1]!.at >= this.o.rateWindowMs) this.samples.shift();
      const { asOf: _asOf, ...comparable } = status;
      const key = JSON.stringify(comparable);
      const event = this.eventOf(status);
      const changed = key !== this.lastStatus || JSON.stringify(event.ingestRate) !== JSON.stringify(this.lastEvent?.ingestRate);
      this.lastStatus = key;
      this.lastEvent = event;
      if (changed) this.broadcast('status', event);
      await this.followUploads(now);
    } catch (err) {
      this.logger.warn({ err }, 'status for the event stream failed; trying again at the next tick');
    } finally {
      this.ticking = false;
    }
  }

  private eventOf(status: S): StatusEvent<S> {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1]!;
    const seconds = first && first !== last ? (last.at - first.at) / 1000 : 0;
    const ingestRate = seconds > 0 ? (last.indexed - first!.indexed) / seconds : null;
    const pending = Math.max(0, status.pending);
    // A deployment that cannot see its queues reports pending −1: no estimate then.
    const estimatedLagSeconds = status.pending === 0 ? 0 : status.pending > 0 && ingestRate !== null && ingestRate > 0 ? pending / ingestRate : null;
    return { status, ingestRate, estimatedLagSeconds };
  }

  private async followUploads(now: number): Promise<void> {
    if (!this.uploadStateOf) return;
    for (const [name, t] of this.tracked) if (now - t.at > this.o.trackMs) this.tracked.delete(name);
    // Indexed, rejected and ignored are final: only pending (or not yet read) uploads are read again,
    // at most maxReadsPerTick of them, the least recently read first.
    const due = [...this.tracked]
      .filter(([, t]) => t.state === null || t.state === 'pending')
      .sort((a, b) => a[1].readAt - b[1].readAt)
      .slice(0, this.o.maxReadsPerTick);
    for (const [name, t] of due) {
      t.readAt = ++this.reads;
      const state = await this.uploadStateOf(name);
      const frame = frameOf('upload', state);
      if (frame !== t.frame) {
        t.state = state.state;
        t.frame = frame;
        this.broadcastRaw(frame);
      }
    }
  }

  private broadcast(event: string, data: unknown): void {
    this.broadcastRaw(frameOf(event, data));
  }

  private broadcastRaw(frame: string): void {
    for (const res of [...this.clients.keys()]) this.write(res, frame);
  }

  private send(res: ServerResponse, event: string, data: unknown): void {
    this.write(res, frameOf(event, data));
  }

  /** Ends every stream and refuses new ones. */
  close(): void {
    this.closed = true;
    this.stop();
    for (const res of this.clients.keys()) res.end();
    this.clients.clear();
    this.perClient.clear();
  }
}

/** One SSE frame; JSON never holds a raw newline, so `data:` is one line. */
function frameOf(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
