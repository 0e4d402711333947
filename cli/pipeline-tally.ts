import path from 'node:path';
import type { EmbedOutcome, ObjectEventOutcome, UpsertHandlerOutcome } from '../shared/handlers/results.js';

type Fate = 'indexed' | 'unchanged' | 'superseded' | 'rejected' | 'dead-lettered';
/** When one image gets several outcomes (a message left by an interrupted run and this run's), the strongest is its fate. */
const RANK: Record<Fate, number> = { indexed: 5, rejected: 4, 'dead-lettered': 3, unchanged: 2, superseded: 1 };

/**
 * Running totals of a backfill, for the progress bar and the summary. Images are counted once
 * each, by id, whatever messages the queue delivers for them (a re-run after an interrupt also
 * settles the messages the earlier run left): the summary adds up to the files listed.
 */
export class PipelineTally {
  /** Files listed (the total the progress bar shows from the start). */
  listed = 0;
  /** Listed files whose object event has been handled (published, skipped or rejected). */
  seen = 0;
  published = 0;
  ignored = 0;
  deleted = 0;
  retried = 0;
  /** Dead-lettered messages whose image is unknown (a dead-letter outcome carries no id). */
  private deadLetteredUnknown = 0;
  rejected: { name: string; reason: string; detail: string }[] = [];
  private readonly fates = new Map<string, Fate>();
  /** Published ids (this run's images) and the ids whose embed step settled (progress). */
  private readonly publishedIds = new Set<string>();
  private readonly settledIds = new Set<string>();
  /** Stems (path without extension) of the images seen, and the .json/.txt files skipped. */
  private readonly imageStems = new Set<string>();
  private readonly skippedText: string[] = [];

  onObjectEvent(name: string, o: ObjectEventOutcome): void {
    this.seen++;
    if (o.status === 'published') {
      this.published++;
      this.publishedIds.add(o.id);
      this.imageStems.add(stem(name));
    } else if (o.status === 'skipped') {
      if (/\.(json|txt)$/i.test(name)) this.skippedText.push(name);
      else this.ignored++;
    } else {
      this.imageStems.add(stem(name));
      this.rejected.push({ name, reason: o.reason, detail: o.detail });
    }
  }

  /** Images of this run whose embed step has settled (the progress bar's value). */
  get settled(): number {
    return this.settledIds.size;
  }

  /**
   * Files fully accounted for, the bar's value against `listed`: files looked at that needed no
   * embedding, plus images whose embed step settled. It never decreases (publishing a file adds
   * to `seen` and `published` alike).
   */
  get processed(): number {
    return this.seen - this.published + this.settled;
  }

  /** Caption/label sidecars (`<image stem>.json|.txt`) are read with their image, not ignored. */
  private sidecarCount(): number {
    return this.skippedText.filter((name) => this.imageStems.has(stem(name))).length;
  }

  private fate(id: string, fate: Fate): void {
    if (!this.publishedIds.has(id)) return; // another folder's message left in the queue
    const had = this.fates.get(id);
    if (!had || RANK[fate] > RANK[had]) this.fates.set(id, fate);
  }

  onEmbedded(outcomes: EmbedOutcome[], nameOf: (id: string) => string): void {
    for (const o of outcomes) {
      if (o.status === 'retry') {
        this.retried++;
        continue;
      }
      if (o.status === 'dead-lettered') {
        this.deadLetteredUnknown++;
        continue;
      }
      if (this.publishedIds.has(o.id)) this.settledIds.add(o.id);
      if (o.status === 'unchanged') this.fate(o.id, 'unchanged');
      else if (o.status === 'superseded') this.fate(o.id, 'superseded');
      else if (o.status === 'rejected') {
        if (this.publishedIds.has(o.id) && this.fates.get(o.id) !== 'rejected') this.rejected.push({ name: nameOf(o.id), reason: o.reason, detail: o.detail });
        this.fate(o.id, 'rejected');
      }
    }
  }

  onUpserted(outcomes: UpsertHandlerOutcome[]): void {
    for (const o of outcomes) {
      if (o.status === 'created' || o.status === 'updated') this.fate(o.id, 'indexed');
      else if (o.status === 'unchanged') this.fate(o.id, 'unchanged');
      else if (o.status === 'stale') this.fate(o.id, 'superseded');
      else if (o.status === 'deleted') this.deleted++;
      else if (o.status === 'dead-lettered') this.deadLetteredUnknown++;
    }
  }

  summary() {
    const sidecars = this.sidecarCount();
    const byReason: Record<string, number> = {};
    for (const r of this.rejected) byReason[r.reason] = (byReason[r.reason] ?? 0) + 1;
    const count = (fate: Fate) => [...this.fates.values()].filter((f) => f === fate).length;
    const deadLettered = count('dead-lettered') + this.deadLetteredUnknown;
    return {
      files: this.listed,
      indexed: count('indexed'),
      unchanged: count('unchanged'),
      rejected: this.rejected.length,
      rejectedByReason: byReason,
      rejections: this.rejected,
      sidecars,
      ignored: this.ignored + this.skippedText.length - sidecars,
      superseded: count('superseded'),
      deadLettered,
      /** Images published but with no outcome yet (only when the run was cut short). */
      pending: Math.max(0, this.published - this.fates.size),
    };
  }
}

function stem(name: string): string {
  return name.slice(0, name.length - path.posix.extname(name).length);
}
