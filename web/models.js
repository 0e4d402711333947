// Model versions: metrics, lineage, the gate's reasons, each run's training curves, and rollback.
import { $, asJson, el, fmtNumber, getJson, on, say } from './dom.js';
import { lineChart } from './charts.js';

let models = [];
let selected = null;
let activeVersion = null;

const metric = (v) => (typeof v === 'number' ? v.toFixed(3) : '–');

function detail(m) {
  const box = $('#model-detail');
  const lineage = Object.entries(m.lineage ?? {}).filter(([, v]) => v !== undefined && v !== null);
  const gate = m.metrics?.gate;
  const history = m.metrics?.training?.history ?? [];
  const parts = [
    el('h3', { id: 'model-detail-title', text: `Version ${m.version}${m.active ? ' (active)' : ''}` }),
    el('h4', { text: 'Lineage' }),
    lineage.length
      ? el(
          'dl',
          { class: 'lineage' },
          ...lineage.flatMap(([k, v]) => [
            el('dt', { text: k }),
            el('dd', {
              text: typeof v === 'object' ? JSON.stringify(v) : typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toFixed(3))) : String(v),
            }),
          ]),
        )
      : el('p', { class: 'muted', text: 'a base model: no parent, no training run' }),
    el('h4', { text: 'Promotion gate' }),
    gate
      ? el(
          'div',
          {},
          el('p', { class: gate.promote ? 'ok' : 'warn', text: gate.promote ? 'promoted: better than the model it was compared with' : 'held back' }),
          el('ul', { class: 'gate-reasons' }, ...gate.reasons.map((r) => el('li', { text: r }))),
        )
      : el('p', { class: 'muted', text: 'no gate decision recorded (not a retraining candidate)' }),
    el('h4', { text: 'Training curves' }),
  ];
  if (history.length) {
    const best = m.metrics.training.bestEpoch;
    const markers = best ? [{ x: best, label: `best epoch ${best}` }] : [];
    parts.push(
      el(
        'div',
        { class: 'curves', id: 'training-curves' },
        lineChart({
          title: 'Training loss per epoch',
          label: `Training loss of ${m.version}`,
          xLabel: 'epoch',
          yLabel: 'loss',
          markers,
          series: [
            { name: 'loss', points: history.map((h) => ({ x: h.epoch, y: h.loss })) },
            { name: 'image–image', points: history.map((h) => ({ x: h.epoch, y: h.imageImageLoss })) },
            { name: 'image–text', points: history.map((h) => ({ x: h.epoch, y: h.imageTextLoss })) },
          ],
        }),
        history.some((h) => h.validationRecallAt1 !== null)
          ? lineChart({
              title: 'Validation recall@1 per epoch',
              label: `Validation recall@1 of ${m.version}`,
              xLabel: 'epoch',
              yLabel: 'recall@1',
              markers,
              series: [{ name: 'validation recall@1', points: history.map((h) => ({ x: h.epoch, y: h.validationRecallAt1 })) }],
            })
          : null,
      ),
    );
  } else parts.push(el('p', { class: 'muted', text: 'no training curve stored for this version (base models, or trained before curves were kept)' }));
  box.replaceChildren(...parts.filter(Boolean));
}

function render() {
  $('#models tbody').replaceChildren(
    ...models.map((m) =>
      el(
        'tr',
        { class: m.version === selected ? 'selected' : '', dataset: { version: m.version } },
        el(
          'td',
          {},
          el('button', { type: 'button', class: 'link', 'aria-pressed': String(m.version === selected), onclick: () => choose(m.version) }, m.version),
        ),
        el('td', { text: m.active ? 'yes' : '' }),
        el('td', { text: m.parent ?? '' }),
        el('td', { text: m.createdAt?.slice(0, 19).replace('T', ' ') ?? '' }),
        el('td', { text: metric(m.metrics?.imageToImage?.['recall@1']) }),
        el('td', { text: metric(m.metrics?.textToImage?.['precision@10']) }),
        el('td', { text: m.metrics?.gate ? (m.metrics.gate.promote ? 'passed' : 'held back') : '' }),
      ),
    ),
  );
  const m = models.find((x) => x.version === selected);
  if (m) detail(m);
  const plot = $('#metrics-plot');
  if (models.some((x) => x.metrics?.imageToImage)) {
    plot.src = `/api/reports/metrics.png?t=${Date.now()}`;
    plot.hidden = false;
  }
  plot.addEventListener('error', () => (plot.hidden = true), { once: true });
}

function choose(version) {
  selected = version;
  render();
}

async function refresh() {
  try {
    models = await getJson('/api/models');
    // Newest first; the latest trained version (else the active one) opens by default.
    models.sort((a, b) => (b.createdAt ?? '').localeCompare(a.createdAt ?? ''));
    if (!selected || !models.some((m) => m.version === selected))
      selected = (models.find((m) => m.metrics?.training) ?? models.find((m) => m.active) ?? models[0])?.version ?? null;
    render();
    $('#models caption').textContent = `Model versions (${fmtNumber(models.length)})`;
    if (!models.length) say($('#models-message'), 'no model versions yet');
  } catch (err) {
    say($('#models-message'), `models unavailable: ${err.message}`, 'error');
  }
}

async function rollback() {
  const button = $('#rollback');
  button.disabled = true;
  say($('#models-message'), 'Rolling back…');
  try {
    const r = await asJson(await fetch('/api/models/rollback', { method: 'POST' }));
    say($('#models-message'), `Rolled back: model ${r.modelVersion} is active, index ${r.index} (${r.documents} documents).`);
    await refresh();
  } catch (err) {
    say($('#models-message'), `Rollback refused: ${err.message}`, 'error');
  } finally {
    button.disabled = false;
  }
}

export function initModels() {
  $('#rollback').addEventListener('click', rollback);
  on('view', (v) => v === 'models' && refresh());
  on('status', ({ status }) => {
    const v = status.model?.version ?? null;
    if (v !== activeVersion) {
      activeVersion = v;
      refresh();
    }
  });
}
