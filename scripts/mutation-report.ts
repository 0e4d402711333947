/**
 * Reads StrykerJS's JSON report (reports/mutation/mutation.json, the mutation-testing-report-schema)
 * and prints, as Markdown: the score per module (detected = killed + timed out, over all valid
 * mutants; no-coverage mutants count as undetected, as in Stryker's own score) and every surviving
 * or uncovered mutant with its place and replacement, ready to be triaged in docs/MUTATION.md.
 *   node --import tsx scripts/mutation-report.ts [report.json] > /tmp/mutation.md
 */
import { readFileSync } from 'node:fs';

interface Mutant {
  id: string;
  mutatorName: string;
  replacement?: string;
  status: 'Killed' | 'Survived' | 'NoCoverage' | 'Timeout' | 'CompileError' | 'RuntimeError' | 'Ignored' | 'Pending';
  location: { start: { line: number; column: number } };
}
interface Report {
  files: Record<string, { mutants: Mutant[] }>;
}

const file = process.argv[2] ?? 'reports/mutation/mutation.json';
const report = JSON.parse(readFileSync(file, 'utf8')) as Report;

const rows: string[] = ['| module | mutants | killed | timed out | survived | no coverage | score |', '| --- | --- | --- | --- | --- | --- | --- |'];
const undetected: string[] = [];
let allDetected = 0;
let allValid = 0;
for (const [path, { mutants }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
  const count = (s: Mutant['status']) => mutants.filter((m) => m.status === s).length;
  const valid = mutants.filter((m) => !['CompileError', 'RuntimeError', 'Ignored', 'Pending'].includes(m.status)).length;
  const detected = count('Killed') + count('Timeout');
  allDetected += detected;
  allValid += valid;
  const score = valid === 0 ? 'n/a' : `${((100 * detected) / valid).toFixed(1)} %`;
  rows.push(`| ${path} | ${valid} | ${count('Killed')} | ${count('Timeout')} | ${count('Survived')} | ${count('NoCoverage')} | ${score} |`);
  for (const m of mutants.filter((x) => x.status === 'Survived' || x.status === 'NoCoverage').sort((a, b) => a.location.start.line - b.location.start.line)) {
    const replacement = (m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 80).replace(/\|/g, '\\|');
    undetected.push(`| ${path}:${m.location.start.line} | ${m.mutatorName} | ${m.status} | \`${replacement}\` | |`);
  }
}
rows.push(`| **all** | ${allValid} | | | | | **${((100 * allDetected) / Math.max(1, allValid)).toFixed(1)} %** |`);

console.log(rows.join('\n'));
console.log('\n| place | mutator | status | replacement | triage |\n| --- | --- | --- | --- | --- |');
console.log(undetected.join('\n'));
