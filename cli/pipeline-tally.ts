import path from 'node:path';
import type { EmbedOutcome, ObjectEventOutcome, UpsertHandlerOutcome } from '../shared/handlers/results.js';

/** Running totals of a backfill, for the progress bar and the summary. */
export class PipelineTally {
  published = 0;
  ignored = 0;
  indexed = 0;
  unchanged = 0;
  stale = 0;
  superseded = 0;
  deleted = 0;
  retried = 0;
  deadLettered = 0;
  /** Image events fully handled by the embed step (everything but retries). */
  settled = 0;
  rejected: { name: string; reason: string; detail: string }[] = [];
  /** Stems (path without extension) of the images seen, and the .json/.txt files skipped. */
  private readonly imageStems = new Set<string>();
  private readonly skippedText: string[] = [];

  onObjectEvent(name: string, o: ObjectEventOutcome): void {
    if (o.status === 'published') {
      this.published++;
      this.imageStems.add(stem(name));
    } else if (o.status === 'skipped') {
      if (/\.(json|txt)$/i.test(name)) this.skippedText.push(name);
      else this.ignored++;
    } else {
      this.imageStems.add(stem(name));
      this.rejected.push({ name, reason: o.reason, detail: o.detail });
    }
  }

  /** Caption/label sidecars (`<image stem>.json|.txt`) are read with their image, not ignored. */
  private sidecarCount(): number {
    return this.skippedText.filter((name) => this.imageStems.has(stem(name))).length;
  }

  onEmbedded(outcomes: EmbedOutcome[], nameOf: (id: string) => string): void {
    for (const o of outcomes) {
      if (o.status === 'retry') {
        this.retried++;
        continue;
      }
      this.settled++;
      if (o.status === 'unchanged') this.unchanged++;
      else if (o.status === 'superseded') this.superseded++;
      else if (o.status === 'dead-lettered') this.deadLettered++;
      else if (o.status === 'rejected') this.rejected.push({ name: nameOf(o.id), reason: o.reason, detail: o.detail });
    }
  }

  onUpserted(outcomes: UpsertHandlerOutcome[]): void {
    for (const o of outcomes) {
      if (o.status === 'created' || o.status === 'updated') this.indexed++;
      else if (o.status === 'unchanged') this.unchanged++;
      else if (o.status === 'stale') this.stale++;
      else if (o.status === 'deleted') this.deleted++;
      else if (o.status === 'dead-lettered') this.deadLettered++;
    }
  }

  summary() {
    const sidecars = this.sidecarCount();
    const byReason: Record<string, number> = {};
    for (const r of this.rejected) byReason[r.reason] = (byReason[r.reason] ?? 0) + 1;
    return {
      indexed: this.indexed,
      unchanged: this.unchanged,
      rejected: this.rejected.length,
      rejectedByReason: byReason,
      rejections: this.rejected,
      sidecars,
      ignored: this.ignored + this.skippedText.length - sidecars,
      superseded: this.superseded + this.stale,
      deadLettered: this.deadLettered,
    };
  }
}

function stem(name: string): string {
  return name.slice(0, name.length - path.posix.extname(name).length);
}
