import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import {
  doctorOutputSchema,
  indexVersionsOutputSchema,
  ingestOutputSchema,
  labelsOutputSchema,
  modelListOutputSchema,
  modelRemovalOutputSchema,
  rmOutputSchema,
  searchOutputSchema,
  statusOutputSchema,
} from '../../shared/output-schemas.js';
import { runCli, startUp, tempDir } from '../helpers/cli.js';

/**
 * Issue 14, points 10 and 11: `rm`, `model prune`, `model rm`, and one versioned JSON schema per
 * output (shared/output-schemas.ts), the same from the CLI and the API — run as a user would.
 */
const N = 30;
let work: string;
let home: string;
const cli = (...args: string[]) => runCli(args, { cwd: work, env: { IMGSEARCH_HOME: home } });
const json = (stdout: string): unknown => JSON.parse(stdout);

async function indexedIds(): Promise<Map<string, string>> {
  const r = await cli('search', '--image', 'imgs/test-00000.png', '-k', '1000', '--json');
  expect(r.code, r.stderr).toBe(0);
  const out = searchOutputSchema.parse(json(r.stdout));
  return new Map(out.results.map((h) => [h.name, h.id]));
}

beforeAll(async () => {
  work = await tempDir('cli-outputs');
  home = path.join(work, 'home');
  const made = await cli('dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(N), '--split', 'test');
  expect(made.code, made.stderr).toBe(0);
  const ingest = await cli('ingest', 'imgs', '--json');
  expect(ingest.code, ingest.stderr).toBe(0);
  expect(ingestOutputSchema.parse(json(ingest.stdout))).toMatchObject({ schemaVersion: 1, files: expect.any(Number), indexed: N });
}, 180_000);

afterAll(async () => {
  if (work) await fs.rm(work, { recursive: true, force: true });
});

describe('imgsearch rm', () => {
  it('refuses an image whose file still exists; --delete-file removes image and file; a gone file is removed by its path', async () => {
    const ids = await indexedIds();
    expect(ids.size).toBe(N);
    const kept = ids.get('test-00003.png')!;
    const refused = await cli('rm', kept);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toMatch(new RegExp(`^imgsearch: ${kept}: not removed: file://.*test-00003\\.png still exists .*--delete-file$`));
    expect(existsSync(path.join(work, 'imgs', 'test-00003.png'))).toBe(true);

    const removed = await cli('rm', kept, '--delete-file', '--json');
    expect(removed.code, removed.stderr).toBe(0);
    expect(rmOutputSchema.parse(json(removed.stdout)).results).toEqual([
      { id: kept, status: 'removed', uri: `file://${path.join(work, 'imgs', 'test-00003.png')}`, fileDeleted: true },
    ]);
    expect(existsSync(path.join(work, 'imgs', 'test-00003.png'))).toBe(false);

    // A file deleted by hand: its image is removed by naming the path it had.
    await fs.rm(path.join(work, 'imgs', 'test-00004.png'));
    const byPath = await cli('rm', 'imgs/test-00004.png');
    expect(byPath.code, byPath.stderr).toBe(0);
    expect(byPath.stdout).toBe(`removed ${ids.get('test-00004.png')}  file://${path.join(work, 'imgs', 'test-00004.png')}\n`);

    const unknown = await cli('rm', 'f'.repeat(32));
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no indexed image has this id or path/);

    const after = await indexedIds();
    expect(after.size).toBe(N - 2);
    expect([...after.values()]).not.toContain(kept);
    expect(statusOutputSchema.parse(json((await cli('status', '--json')).stdout)).indexed).toBe(N - 2);
    // The next ingest of the folder accounts for what is left, and does not bring them back.
    const again = ingestOutputSchema.parse(json((await cli('ingest', 'imgs', '--json')).stdout));
    expect(again).toMatchObject({ files: (await fs.readdir(path.join(work, 'imgs'))).length, unchanged: N - 2, indexed: 0, rejected: 0 });
  }, 180_000);
});

describe('imgsearch model prune / model rm', () => {
  it('prune lists never-promoted retraining candidates (dry run), removes them with --yes; rm refuses the active version', async () => {
    const registry = new LocalModelRegistry(path.join(home, 'models'));
    const active = (await registry.active())!;
    const imageFile = active.manifest.image.file;
    const bytes = await fs.readFile(path.join(await registry.localPath(active.version), imageFile));
    const register = (version: string, parent: string | null) =>
      registry.register({ version, parent, manifest: { ...active.manifest, version }, files: { [imageFile]: bytes } });
    await register('candidate-1', active.version); // what a retrain that lost the gate leaves
    await register('base-2', null); // what `model pull` leaves: not a retraining candidate

    const dry = await cli('model', 'prune', '--json');
    expect(dry.code, dry.stderr).toBe(0);
    expect(modelRemovalOutputSchema.parse(json(dry.stdout))).toEqual({ schemaVersion: 1, versions: ['candidate-1'], droppedIndices: [], dryRun: true });
    const human = await cli('model', 'prune');
    expect(human.stdout).toBe('would remove candidate-1\n1 never-promoted versions; run `imgsearch model prune --yes` to remove them\n');
    expect(await registry.get('candidate-1')).not.toBeNull();

    const pruned = await cli('model', 'prune', '--yes', '--json');
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(modelRemovalOutputSchema.parse(json(pruned.stdout))).toMatchObject({ versions: ['candidate-1'], dryRun: false });

    const refused = await cli('model', 'rm', active.version);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe(`imgsearch: Cannot remove model version ${active.version}: it is active (promote another version first)`);

    const rm = await cli('model', 'rm', 'base-2');
    expect(rm.code, rm.stderr).toBe(0);
    const list = modelListOutputSchema.parse(json((await cli('model', 'list', '--json')).stdout)).versions;
    expect(list.map((v) => [v.version, v.active, v.everActive])).toEqual([[active.version, true, true]]);
  }, 120_000);
});

describe('one versioned schema per --json output, the same from the CLI and the API', () => {
  it('`search --help` documents the JSON it prints: every field of the search schema, labels included', async () => {
    const help = (await cli('search', '--help')).stdout.replace(/\s+/g, ' ');
    const json = /--json print (\{.*\}) best first/.exec(help)?.[1] ?? '';
    for (const field of [
      ...Object.keys(searchOutputSchema.shape).filter((k) => !['queryId', 'feedbackToken'].includes(k)),
      'id',
      'uri',
      'name',
      'score',
      'labels',
    ]) {
      expect(json).toMatch(new RegExp(`\\b${field}\\b`));
    }
  });

  it('status, labels, doctor, index versions parse with their schemas', async () => {
    const status = statusOutputSchema.parse(json((await cli('status', '--json')).stdout));
    expect(status.model).toMatchObject({ dimension: expect.any(Number), hasTextTower: expect.any(Boolean) });
    const labels = labelsOutputSchema.parse(json((await cli('labels', '--json')).stdout));
    expect(labels.labels.reduce((n, l) => n + l.images, 0)).toBe(N - 2);
    const doctor = doctorOutputSchema.parse(json((await cli('doctor', '--json')).stdout));
    expect(doctor).toEqual({ schemaVersion: 1, home, findings: [] });
    const versions = indexVersionsOutputSchema.parse(json((await cli('index', 'versions', '--json')).stdout)).versions;
    expect(versions.filter((v) => v.live)).toHaveLength(1);
  }, 120_000);

  it('CLI search and API search give the same answer in the same shape; /api/status parses with the status schema', async () => {
    const id = (await indexedIds()).get('test-00001.png')!;
    const up = await startUp({ cwd: work, env: { IMGSEARCH_HOME: home, IMGSEARCH_BUCKET_DIR: path.join(work, 'imgs') } });
    try {
      const api = searchOutputSchema.parse(await (await fetch(`${up.url}/api/search?similarTo=${id}&k=5`)).json());
      const fromCli = await cli('search', '--similar', id, '-k', '5', '--json');
      expect(fromCli.code, fromCli.stderr).toBe(0);
      const local = searchOutputSchema.parse(json(fromCli.stdout));
      const { queryId, feedbackToken, ...apiAnswer } = api;
      expect(queryId).toEqual(expect.any(String));
      expect(feedbackToken).toEqual(expect.any(String));
      expect(apiAnswer.results.every((h) => h.thumbnailUrl === `/api/images/${h.id}/thumbnail`)).toBe(true);
      expect(local).toEqual({ ...apiAnswer, results: apiAnswer.results.map(({ thumbnailUrl: _t, ...h }) => h) });
      expect(local.results).toHaveLength(5);
      const apiStatus = statusOutputSchema.parse(await (await fetch(`${up.url}/api/status`)).json());
      expect(apiStatus.indexed).toBe(N - 2);
    } finally {
      await up.stop();
    }
  }, 180_000);

  it('status reads the model from its manifest: it answers although the ONNX file cannot be loaded', async () => {
    const registry = new LocalModelRegistry(path.join(home, 'models'));
    const active = (await registry.active())!;
    const file = path.join(await registry.localPath(active.version), active.manifest.image.file);
    const original = await fs.readFile(file);
    await fs.writeFile(file, 'not an onnx model');
    try {
      const r = await cli('status', '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(statusOutputSchema.parse(json(r.stdout)).model).toEqual({
        version: active.version,
        name: active.manifest.name,
        dimension: active.manifest.dimension,
        hasTextTower: active.manifest.text !== undefined,
      });
    } finally {
      await fs.writeFile(file, original);
    }
  }, 60_000);
});

describe('ingest progress and summary', () => {
  it('rejections appear in the summary only (and in the log file), never as JSON lines on the terminal', async () => {
    const mixed = path.join(work, 'mixed');
    await fs.mkdir(mixed);
    for (const name of ['test-00005.png', 'test-00006.png']) await fs.copyFile(path.join(work, 'imgs', name), path.join(mixed, name));
    await fs.writeFile(path.join(mixed, 'broken.jpg'), 'not a jpeg at all');
    await fs.writeFile(path.join(mixed, 'empty.png'), '');
    await fs.writeFile(path.join(mixed, 'notes.pdf'), '%PDF-1.4 not an image');
    const r = await cli('ingest', 'mixed');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/"severity"/);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^5 files: indexed 2, skipped as unchanged 0, rejected 2, caption\/label sidecars 0, ignored \(not images\) 1$/);
    expect(lines.slice(1, 3).sort()).toEqual([
      expect.stringMatching(/^ {2}rejected broken\.jpg: /),
      expect.stringMatching(/^ {2}rejected empty\.png: empty-file /),
    ]);
    const logFile = path.join(home, 'logs', 'ingest.log');
    expect(lines[3]).toBe(`log: ${logFile}`);
    expect(await fs.readFile(logFile, 'utf8')).toMatch(/broken\.jpg/);
  }, 120_000);
});
