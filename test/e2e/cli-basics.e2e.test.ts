import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestOutputSchema, labelsOutputSchema, searchOutputSchema } from '../../shared/output-schemas.js';
import { cliPath, runCli, tempDir } from '../helpers/cli.js';

/**
 * Issue 14, point 10 (the missing basics): ids in human `search` output, `--similar <path>`,
 * `imgsearch labels` (and a hint when `--label` differs only by case), `completion bash|zsh` and
 * `up --open` — run as a user would, on one small home shared by this file's tests.
 */
const LABELS: Record<string, string[]> = {
  'test-00000': ['Dress'],
  'test-00001': ['Dress', 'Summer'],
  'test-00002': ['shirt'],
  'test-00003': ['shirt'],
  'test-00004': ['shirt'],
  'test-00005': ['Bag'],
  'twin-of-3': ['shirt'], // a byte-identical copy of test-00003.png
};
const N = Object.keys(LABELS).length;
const uriOf = (name: string) => `file://${path.join(work, 'imgs', name)}`;
let work: string;
let home: string;
const cli = (...args: string[]) => runCli(args, { cwd: work, env: { IMGSEARCH_HOME: home } });

/** Human search output: `rank  score  id  uri  [labels]` per line. */
function humanHits(stdout: string): { rank: number; score: number; id: string; uri: string; labels: string }[] {
  return stdout
    .trim()
    .split('\n')
    .map((line) => {
      const m = /^\s*(\d+)\s+(-?\d+\.\d+)\s+(\S+)\s+(\S+)(?:\s+\[(.*)\])?$/.exec(line);
      expect(m, `unexpected line: ${line}`).not.toBeNull();
      return { rank: Number(m![1]), score: Number(m![2]), id: m![3]!, uri: m![4]!, labels: m![5] ?? '' };
    });
}

beforeAll(async () => {
  work = await tempDir('cli-basics');
  home = path.join(work, 'home');
  const made = await cli('dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(N - 1), '--split', 'test');
  expect(made.code, made.stderr).toBe(0);
  await fs.copyFile(path.join(work, 'imgs', 'test-00003.png'), path.join(work, 'imgs', 'twin-of-3.png'));
  // Our own labels, so the expected counts come from this test, not from the dataset command.
  for (const [stem, labels] of Object.entries(LABELS)) await fs.writeFile(path.join(work, 'imgs', `${stem}.json`), JSON.stringify({ labels }));
  const ingest = await cli('ingest', 'imgs', '--json');
  expect(ingest.code, ingest.stderr).toBe(0);
  expect(ingestOutputSchema.parse(JSON.parse(ingest.stdout))).toMatchObject({ indexed: N, rejected: 0 });
}, 180_000);

afterAll(async () => {
  if (work) await fs.rm(work, { recursive: true, force: true });
});

describe('ids in human search output, and --similar <id | path>', () => {
  // `--similar` answers images like the one named, leaving that image out: its byte-identical twin
  // comes first with score ≈ 1, which shows which image the id or path was taken to mean.
  it('human output shows each image id; the id printed for an image, given to --similar, means that image', async () => {
    const r = await cli('search', '--image', 'imgs/test-00003.png', '-k', String(N));
    expect(r.code, r.stderr).toBe(0);
    const hits = humanHits(r.stdout);
    expect(hits.map((h) => h.rank)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    expect(new Set(hits.map((h) => h.id)).size).toBe(N);
    for (const h of hits) expect(h.id).toMatch(/^[0-9a-f]{32}$/);
    expect(
      hits
        .slice(0, 2)
        .map((h) => h.uri)
        .sort(),
    ).toEqual([uriOf('test-00003.png'), uriOf('twin-of-3.png')]);
    expect(hits[0]!.labels).toBe('shirt');

    for (const [self, twin] of [
      ['test-00003.png', 'twin-of-3.png'],
      ['twin-of-3.png', 'test-00003.png'],
    ] as const) {
      const id = hits.find((h) => h.uri === uriOf(self))!.id;
      const similar = await cli('search', '--similar', id, '-k', String(N), '--json');
      expect(similar.code, similar.stderr).toBe(0);
      const out = searchOutputSchema.parse(JSON.parse(similar.stdout));
      expect(out.query).toEqual({ kind: 'similar', value: id });
      expect(out.results[0]).toMatchObject({ uri: uriOf(twin), score: expect.closeTo(1, 3) });
      expect(out.results.map((h) => h.id)).not.toContain(id);
      expect(out.results).toHaveLength(N - 1);
    }
    // An id printed for an image far from the query is accepted too.
    const last = await cli('search', '--similar', hits[N - 1]!.id, '-k', '1', '--json');
    expect(last.code, last.stderr).toBe(0);
    expect(searchOutputSchema.parse(JSON.parse(last.stdout)).query.value).toBe(hits[N - 1]!.id);
  });

  it('--similar <path> of an indexed image (relative or absolute) means that image: its twin first with score ≈ 1', async () => {
    const byId = new Map(
      searchOutputSchema
        .parse(JSON.parse((await cli('search', '--image', 'imgs/test-00000.png', '-k', String(N), '--json')).stdout))
        .results.map((h) => [h.uri, h.id]),
    );
    for (const [file, twin] of [
      ['imgs/test-00003.png', 'twin-of-3.png'],
      [path.join(work, 'imgs', 'twin-of-3.png'), 'test-00003.png'],
    ] as const) {
      const r = await cli('search', '--similar', file, '-k', '3', '--json');
      expect(r.code, r.stderr).toBe(0);
      const out = searchOutputSchema.parse(JSON.parse(r.stdout));
      expect(out.query).toEqual({ kind: 'similar', value: byId.get(`file://${path.resolve(work, file)}`) });
      expect(out.results[0]!.uri).toBe(uriOf(twin));
      expect(out.results[0]!.score).toBeCloseTo(1, 3);
    }
    // The path and the id it stands for give the same answer.
    const viaId = await cli('search', '--similar', byId.get(uriOf('test-00005.png'))!, '-k', '3');
    const viaPath = await cli('search', '--similar', 'imgs/test-00005.png', '-k', '3');
    expect(viaPath.code, viaPath.stderr).toBe(0);
    expect(viaPath.stdout).toBe(viaId.stdout);
    expect(humanHits(viaPath.stdout).map((h) => h.uri)).not.toContain(uriOf('test-00005.png'));
  });

  it('--similar <path> of a file that was never ingested is a usage error naming it', async () => {
    await fs.mkdir(path.join(work, 'elsewhere'), { recursive: true });
    await fs.copyFile(path.join(work, 'imgs', 'test-00003.png'), path.join(work, 'elsewhere', 'copy.png'));
    const r = await cli('search', '--similar', 'elsewhere/copy.png');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/elsewhere\/copy\.png is not an indexed image/);
    expect(r.stdout).toBe('');
  });
});

describe('imgsearch labels', () => {
  it('--json counts equal the labels in the sidecars, most used first; human output lists the same', async () => {
    const r = await cli('labels', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(labelsOutputSchema.parse(JSON.parse(r.stdout))).toEqual({
      schemaVersion: 1,
      labels: [
        { label: 'shirt', images: 4 },
        { label: 'Dress', images: 2 },
        { label: 'Bag', images: 1 },
        { label: 'Summer', images: 1 },
      ],
    });
    const human = await cli('labels');
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toBe('4  shirt\n2  Dress\n1  Bag\n1  Summer\n');
  });

  it('--label filters by an exact label', async () => {
    const r = await cli('search', '--image', 'imgs/test-00002.png', '--label', 'Dress', '-k', String(N), '--json');
    expect(r.code, r.stderr).toBe(0);
    const names = searchOutputSchema.parse(JSON.parse(r.stdout)).results.map((h) => h.name);
    expect(names.sort()).toEqual(['test-00000.png', 'test-00001.png']);
  });

  it('a --label that differs only by case finds nothing, and says which label was meant (human and --json)', async () => {
    const human = await cli('search', '--image', 'imgs/test-00002.png', '--label', 'dress');
    expect(human.code, human.stderr).toBe(0);
    expect(`${human.stdout}${human.stderr}`).toMatch(/"Dress"/);

    const json = await cli('search', '--image', 'imgs/test-00002.png', '--label', 'DRESS', '--json');
    expect(json.code, json.stderr).toBe(0);
    expect(searchOutputSchema.parse(JSON.parse(json.stdout)).results).toEqual([]); // stdout stays valid JSON
    expect(json.stderr).toMatch(/"DRESS".*"Dress"/);

    // A label with no near match still gets a warning, pointing at `imgsearch labels`.
    const none = await cli('search', '--image', 'imgs/test-00002.png', '--label', 'sandal', '--json');
    expect(none.code, none.stderr).toBe(0);
    expect(none.stderr).toMatch(/"sandal".*imgsearch labels/);
    // An existing label that simply has no hit above --min-score warns about nothing.
    const cut = await cli('search', '--image', 'imgs/test-00002.png', '--label', 'Bag', '--min-score', '1', '--json');
    expect(cut.code, cut.stderr).toBe(0);
    expect(cut.stderr).toBe('');
  });
});

describe('imgsearch completion', () => {
  async function topLevelCommands(): Promise<string[]> {
    const help = await cli('--help');
    expect(help.code, help.stderr).toBe(0);
    const section = help.stdout.split(/^Commands:$/m)[1] ?? '';
    const names = [...section.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
    expect(names).toEqual(expect.arrayContaining(['search', 'labels', 'completion', 'up', 'model']));
    return names;
  }

  function bash(script: string): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = execFile('bash', ['--norc', '--noprofile', '-c', script], { cwd: work }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
      child.stdin?.end();
    });
  }

  it('`completion bash` is valid bash, names every top-level command, and completes commands and their flags', async () => {
    const commands = await topLevelCommands();
    const r = await cli('completion', 'bash');
    expect(r.code, r.stderr).toBe(0);
    const file = path.join(work, 'imgsearch.bash');
    await fs.writeFile(file, r.stdout);
    const syntax = await bash(`bash -n ${JSON.stringify(file)}`);
    expect(syntax.code, syntax.stderr).toBe(0);
    for (const c of commands) expect(r.stdout).toMatch(new RegExp(`\\b${c}\\b`));

    // Ask the function what <TAB> offers, as bash would.
    const complete = (...words: string[]) =>
      bash(
        `source ${JSON.stringify(file)}; COMP_WORDS=(imgsearch ${words.map((w) => JSON.stringify(w)).join(' ')}); COMP_CWORD=${words.length}; _imgsearch_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ).then((out) => {
        expect(out.code, out.stderr).toBe(0);
        return out.stdout.trim().split('\n').sort();
      });
    expect(await complete('')).toEqual(expect.arrayContaining(commands));
    expect(await complete('la')).toEqual(['labels']);
    expect(await complete('search', '--sim')).toEqual(['--similar']);
    expect(await complete('model', 'pro')).toEqual(expect.arrayContaining(['promote']));
  });

  it('`completion zsh` loads bash completion in zsh; an unknown shell is a usage error', async () => {
    const zsh = await cli('completion', 'zsh');
    expect(zsh.code, zsh.stderr).toBe(0);
    expect(zsh.stdout).toMatch(/^autoload -U \+X bashcompinit && bashcompinit$/m);
    expect(zsh.stdout).toMatch(/^complete -F _imgsearch_complete imgsearch$/m);
    const fish = await cli('completion', 'fish');
    expect(fish.code).toBe(2);
    expect(fish.stderr).toMatch(/unknown shell fish: use bash or zsh/);
  });
});

describe('imgsearch up --open', () => {
  it('opens the page URL it prints with the platform opener (a stub xdg-open on PATH records it)', async () => {
    const bin = path.join(work, 'bin');
    const record = path.join(work, 'opened.txt');
    await fs.mkdir(bin, { recursive: true });
    await fs.writeFile(path.join(bin, 'xdg-open'), `#!/bin/sh\nprintf '%s\\n' "$@" >> ${JSON.stringify(record)}\n`, { mode: 0o755 });
    const child = spawn(process.execPath, [cliPath, 'up', '--open', '--port', '0'], {
      cwd: work,
      env: { ...process.env, LOG_LEVEL: 'warn', IMGSEARCH_HOME: home, IMGSEARCH_BUCKET_DIR: path.join(work, 'imgs'), PATH: `${bin}:${process.env.PATH}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`imgsearch up did not start in time\n${stderr}`)), 120_000);
        child.stdout.on('data', () => {
          const m = /imgsearch is up: (http:\/\/\S+)/.exec(stdout);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`imgsearch up exited with ${code}\n${stderr}`));
        });
      });
      let opened = '';
      for (let i = 0; i < 100 && !opened; i++) {
        opened = await fs.readFile(record, 'utf8').catch(() => '');
        if (!opened) await new Promise((r) => setTimeout(r, 100));
      }
      expect(opened).toBe(`${url}\n`);
      expect(stderr).not.toMatch(/could not open a browser/);
    } finally {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
    }
  }, 180_000);
});
