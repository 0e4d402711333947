// The Monitoring view: the last 24 hours of searches by hour (GET /api/monitor, what `imgsearch monitor --json`
// prints) and the drift report (GET /api/drift, what `imgsearch drift --json` prints). Loaded when the tab is
// shown, refreshed on the live status stream at most every 30 s while it stays shown.
import { $, el, fmtNumber, fmtSeconds, getJson, on, say } from './dom.js';
import { barChart, lineChart } from './charts.js';

const REFRESH_MS = 30_000;
const HOUR_MS = 3_600_000;

const pct = (r) => (r === null || r === undefined ? '–' : `${fmtNumber(r * 100, 1)} %`);
const ms = (v) => (v === null || v === undefined ? '–' : fmtSeconds(v / 1000));
const num = (v, digits = 3) => (typeof v === 'number' ? v.toFixed(digits) : '–');

/** A chart, or a note saying why there is none (no bucket has a value). */
function chartOr(series, options, empty) {
  const has = series.some((sr) => sr.points.some((p) => p.y !== null && Number.isFinite(p.y)));
  return has ? lineChart({ ...options, series }) : el('p', { class: 'muted', text: `${options.title}: ${empty}` });
}

function renderMonitor(m) {
  const t = m.totals;
  const cards = {
    searches: fmtNumber(t.searches),
    'zero-result rate': pct(t.zeroResultRate),
    [`low-score rate (top < ${m.lowScoreThreshold})`]: pct(t.lowScoreRate),
    'click-through rate': pct(t.clickThroughRate),
    'latency p50 / p95': t.latencyMs.total ? `${ms(t.latencyMs.total.p50)} / ${ms(t.latencyMs.total.p95)}` : '–',
    'freshness lag p95': ms(t.freshness.lagMs?.p95),
    clicks: fmtNumber(t.clicks),
  };
  $('#monitor-totals').replaceChildren(
    ...Object.entries(cards).map(([k, v], i) =>
      el('div', { class: 'count' }, el('dt', { text: k }), el('dd', { id: i === 0 ? 'monitor-searches' : undefined, text: v })),
    ),
  );
  $('#monitor-window').textContent =
    `${fmtNumber(t.searches)} searches (image ${fmtNumber(t.byKind.image)}, text ${fmtNumber(t.byKind.text)}, similar ${fmtNumber(t.byKind.similar)}), ` +
    `${fmtNumber(t.zeroResults)} with no result, ${fmtNumber(t.lowScore)} with a low top score, ${fmtNumber(t.clicks)} clicks ` +
    `(${fmtNumber(m.unmatchedClicks)} on searches before the window), ${fmtNumber(t.freshness.count)} images made searchable, ` +
    `from ${new Date(m.since).toLocaleString()} to ${new Date(m.until).toLocaleString()}.`;

  // x: hours before the end of the window (the current hour is 0).
  const end = Date.parse(m.until);
  const x = (b) => Math.floor((Date.parse(b.start) - end) / HOUR_MS) + 1;
  const pts = (f) => m.buckets.map((b) => ({ x: x(b), y: f(b) }));
  const common = { xLabel: 'hours (0 = this hour)', xMin: Math.min(0, ...m.buckets.map(x)), xMax: 0 };
  $('#monitor-charts').replaceChildren(
    chartOr(
      ['image', 'text', 'similar'].map((k) => ({ name: k, points: pts((b) => b.byKind[k]) })),
      { ...common, title: 'Searches per hour, by kind', yLabel: 'searches', yMin: 0 },
      'none',
    ),
    chartOr(
      [
        { name: 'p50', points: pts((b) => b.latencyMs.total?.p50 ?? null) },
        { name: 'p95', points: pts((b) => b.latencyMs.total?.p95 ?? null) },
      ],
      { ...common, title: 'Search latency (total)', yLabel: 'ms', yMin: 0 },
      'no searches in the window',
    ),
    chartOr(
      [
        { name: 'zero results', points: pts((b) => b.zeroResultRate) },
        { name: `top score < ${m.lowScoreThreshold}`, points: pts((b) => b.lowScoreRate) },
      ],
      { ...common, title: 'Zero-result and low-score rates', yLabel: 'share of searches', yMin: 0, yMax: 1 },
      'no searches in the window',
    ),
    chartOr(
      [{ name: 'click-through', points: pts((b) => b.clickThroughRate) }],
      { ...common, title: 'Click-through rate', yLabel: 'share of searches', yMin: 0, yMax: 1 },
      'no searches in the window',
    ),
    chartOr(
      [{ name: 'p95', points: pts((b) => (b.freshness.lagMs ? b.freshness.lagMs.p95 / 1000 : null)) }],
      { ...common, title: 'Freshness lag p95 (upload → searchable)', yLabel: 'seconds', yMin: 0 },
      'no image became searchable in the window',
    ),
    barChart({
      title: 'Searches in the window, by kind',
      bars: ['image', 'text', 'similar'].map((k) => ({ label: k, value: t.byKind[k] })),
    }),
  );
}

function signalRow(name, sig, s) {
  if (sig.status === 'insufficient')
    return el(
      'tr',
      {},
      el('th', { scope: 'row', text: name }),
      el('td', { text: String(sig.sample) }),
      el('td', sig.error ? { class: 'warn', text: `not read: ${sig.error}` } : { text: `too few to judge (under ${s.minSample})` }),
      el('td'),
      el('td'),
      el('td'),
    );
  return el(
    'tr',
    {},
    el('th', { scope: 'row', text: name }),
    el('td', { text: String(sig.sample) }),
    el('td', { class: sig.status === 'drift' ? 'warn' : 'ok', text: sig.status === 'drift' ? 'drift' : 'no shift' }),
    el('td', {
      // Below about 200 vectors the largest PSI is also held to its significance level (shared/services/drift.ts psiCritical).
      text: `${num(sig.psi?.max)} (${sig.psi?.band ?? '–'}; threshold ${s.psiThreshold}${sig.psi?.critical > s.psiThreshold ? `, significant from ${num(sig.psi.critical)}` : ''})`,
    }),
    el('td', { text: `${num(sig.centroidKs?.d)} (threshold ${s.ksThreshold})` }),
    el('td', { text: num(sig.labelPsi) }),
  );
}

/** Row names of the drift signals (the API's keys). */
const SIGNAL_NAMES = { uploads: 'uploads', queries: 'queries vs training (reported only)', servedQueries: 'queries vs served reference' };

function decisionText(d) {
  return d.retrain ? 'retrain' : d.heldBack ? `held back (${d.heldBack})` : 'no retraining needed';
}

function renderDrift(r) {
  const s = r.settings;
  const parts = [el('p', { text: `Model ${r.modelVersion}, checked ${new Date(r.checkedAt).toLocaleString()}.` })];
  if (!r.reference || !r.signals) {
    parts.push(el('p', { id: 'drift-note', class: 'note', text: r.note ?? 'no reference profile' }));
  } else {
    parts.push(
      el('p', {
        text: `Reference: ${fmtNumber(r.reference.count)} training embeddings, ${r.reference.components} principal components (${r.reference.createdAt}).`,
      }),
      el(
        'table',
        { id: 'drift-signals' },
        el('caption', { class: 'visually-hidden', text: 'Drift signals' }),
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ...['signal', 'vectors', 'status', 'max PSI (band; threshold)', 'centroid KS D', 'label-mix PSI'].map((h) => el('th', { scope: 'col', text: h })),
          ),
        ),
        el('tbody', {}, ...Object.entries(r.signals).map(([name, sig]) => signalRow(SIGNAL_NAMES[name] ?? name, sig, s))),
      ),
      el('p', {
        id: 'drift-served-reference',
        class: 'muted',
        text: r.servedReference
          ? `Served-query reference: the model's first ${fmtNumber(r.servedReference.count)} sampled queries (${new Date(r.servedReference.from).toLocaleString()} – ${new Date(r.servedReference.until).toLocaleString()})${r.servedReference.kept ? '' : ', provisional until the next check keeps it'}; later queries are compared with it.`
          : `Served-query reference: not yet — made from the model's first ${fmtNumber(s.servedBaseline)} sampled queries.`,
      }),
    );
  }
  if (r.recall)
    parts.push(
      el('p', {
        text:
          r.recall.recallAt1 === null
            ? `Recall@1 check: ${r.recall.newLabelled} new labelled images, too few to measure.`
            : `Recall@1 check: ${num(r.recall.recallAt1)} on ${r.recall.newLabelled} new labelled images (recorded ${num(r.recall.recorded)}; retrain on a drop over ${s.recallDrop}).`,
      }),
    );
  parts.push(
    el('h4', { text: 'Decision now' }),
    el('p', { id: 'drift-decision', class: r.decision.retrain ? 'warn' : undefined, text: decisionText(r.decision) }),
    ...(r.decision.reasons.length ? [el('ul', {}, ...r.decision.reasons.map((x) => el('li', { text: x })))] : []),
    el('p', {
      class: 'muted',
      text: r.lastCheck
        ? `Last check: ${new Date(r.lastCheck.checkedAt).toLocaleString()}, ${decisionText(r.lastCheck.decision)}.`
        : 'No check has run yet (`imgsearch up` runs one every IMGSEARCH_DRIFT_CHECK_MINUTES).',
    }),
    el('h4', { text: 'Retraining requests' }),
  );
  const requests = r.requests.slice(-5).reverse();
  parts.push(
    requests.length
      ? el(
          'table',
          { id: 'drift-requests' },
          el('caption', { class: 'visually-hidden', text: 'Last retraining requests' }),
          el('thead', {}, el('tr', {}, ...['when', 'model', 'outcome', 'reasons'].map((h) => el('th', { scope: 'col', text: h })))),
          el(
            'tbody',
            {},
            ...requests.map((q) =>
              el(
                'tr',
                {},
                el('td', { text: q.at }),
                el('td', { text: q.modelVersion }),
                el('td', { text: q.outcome }),
                el('td', { text: q.reasons.join('; ') }),
              ),
            ),
          ),
        )
      : el('p', { class: 'muted', text: 'none so far' }),
  );
  $('#drift-panel').replaceChildren(...parts);
}

/** A 404 means this server does not serve the figures (the cloud search service): its message says where they are. */
function unavailable(box, err, what) {
  box.replaceChildren(el('p', { class: 'note', text: err.status === 404 ? err.message : `${what} unavailable: ${err.message}` }));
}

async function loadMonitor() {
  try {
    renderMonitor(await getJson('/api/monitor?since=24h&by=hour'));
  } catch (err) {
    $('#monitor-totals').replaceChildren();
    $('#monitor-window').textContent = '';
    unavailable($('#monitor-charts'), err, 'prediction monitoring');
  }
}

async function loadDrift() {
  try {
    renderDrift(await getJson('/api/drift'));
  } catch (err) {
    unavailable($('#drift-panel'), err, 'the drift report');
  }
}

export function initMonitor() {
  let shown = false;
  let last = 0;
  let running = null;
  const load = () => {
    if (running) return;
    last = Date.now();
    say($('#monitor-message'), 'loading…');
    running = Promise.all([loadMonitor(), loadDrift()]).finally(() => {
      running = null;
      say($('#monitor-message'), `updated ${new Date().toLocaleTimeString()}`);
    });
  };
  on('view', (view) => {
    shown = view === 'monitoring';
    if (shown) load();
  });
  on('status', () => {
    if (shown && Date.now() - last >= REFRESH_MS) load();
  });
}
