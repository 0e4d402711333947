import { loadStackConfig } from './config.js';
import { createStack } from './stack.js';

/**
 * Pulumi program entry (Pulumi.yaml `main: infra/`, run through tsx). Reads and validates the
 * stack settings, builds the stack, exports what an operator needs next.
 */
const { outputs } = createStack(loadStackConfig());

export const imagesBucket = outputs.imagesBucket;
export const modelsBucket = outputs.modelsBucket;
export const featuresBucket = outputs.featuresBucket;
export const imageEventsTopic = outputs.imageEventsTopic;
export const embedJob = outputs.embedJob;
export const reindexJob = outputs.reindexJob;
export const searchUrl = outputs.searchUrl;
export const searchAccess = outputs.searchAccess;
export const searchAddress = outputs.searchAddress;
export const opensearchMode = outputs.opensearchMode;
export const deadLetterInboxes = outputs.deadLetterInboxes;
export const dashboard = outputs.dashboard;
