/** Where every resource of the stack goes; each component's Args extends it. */
export interface Placement {
  /** Google Cloud project id. */
  project: string;
  /** Region of every regional resource. */
  region: string;
  /** Prefix of every resource name (`iss:prefix`). */
  prefix: string;
  /** Labels put on every resource that takes them. */
  labels: Record<string, string>;
}

/** A resource name under the stack's prefix. */
export function resourceName(placement: Pick<Placement, 'prefix'>, suffix: string): string {
  return `${placement.prefix}-${suffix}`;
}

/**
 * Label naming the workload a function, job or service runs (`onObjectEvent` → `on-object-event`):
 * the deploy check reads it to know which code, and so which permissions, a resource carries.
 */
export function workloadLabels(labels: Record<string, string>, workload: string): Record<string, string> {
  return { ...labels, workload: workload.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`) };
}
