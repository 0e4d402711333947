// The pipeline view, fed by the live event stream: counts, ingest rate, freshness lag, queue
// depths, rejections by reason with their files, ignored files, dead letters and faults.
import { $, el, fmtNumber, fmtSeconds, on } from './dom.js';
import { barChart, lineChart } from './charts.js';

/** The last few minutes of (time, indexed, rate) for the ingest chart. */
const history = [];
const HISTORY_MS = 5 * 60_000;
/** Measured upload → searchable lags of this page's uploads (seconds). */
const lags = [];

const fileOf = (uri) => uri.split('/').pop();

function row(cells) {
  return el('tr', {}, ...cells.map((c) => el('td', { text: c ?? '' })));
}

function render({ status: s, ingestRate, estimatedLagSeconds }) {
  const unknown = (n) => (n < 0 ? 'unknown here' : fmtNumber(n));
  const measured = lags.length ? lags.reduce((a, b) => a + b, 0) / lags.length : null;
  const counts = {
    indexed: fmtNumber(s.indexed),
    pending: unknown(s.pending),
    'ingest rate': ingestRate === null ? '–' : `${fmtNumber(ingestRate, 1)} images/s`,
    'freshness lag (estimated)': estimatedLagSeconds === null ? '–' : fmtSeconds(estimatedLagSeconds),
    'freshness lag (page uploads)': measured === null ? '–' : fmtSeconds(measured),
    rejected: fmtNumber(s.rejected.count),
    'dead-lettered': unknown(s.deadLettered.count),
  };
  // The ANN index behind searches (none: exact scan; building; ready, with rows not yet folded in).
  if (s.ann) counts['ann index'] = s.ann.state === 'ready' ? `${s.ann.type}, ${s.ann.rowsUnindexed} rows not yet indexed` : s.ann.state;
  $('#counts').replaceChildren(
    ...Object.entries(counts).map(([k, v]) =>
      el('div', { class: 'count' }, el('dt', { text: k }), el('dd', { id: `count-${k.replace(/[^a-z]+/g, '-').replace(/-$/, '')}`, text: v })),
    ),
  );
  $('#queues tbody').replaceChildren(
    ...Object.entries(s.queues ?? {}).map(([q, v]) => row([q, unknown(v.ready), unknown(v.inflight), unknown(v.deadLettered)])),
  );
  const reasons = Object.entries(s.rejected.byReason ?? {}).sort((a, b) => b[1] - a[1]);
  $('#rejected-chart').replaceChildren(
    ...(reasons.length ? [barChart({ title: 'Rejections by reason', bars: reasons.map(([label, value]) => ({ label, value })) })] : []),
  );
  $('#rejected tbody').replaceChildren(...s.rejected.items.map((r) => row([fileOf(r.uri), r.reason, r.detail, r.at])));
  const ignoredReasons = Object.entries(s.ignored?.byReason ?? {}).map(([r, n]) => `${r}: ${n}`);
  $('#ignored-summary').textContent =
    `Not indexed (ignored): ${fmtNumber(s.ignored?.count ?? 0)}${ignoredReasons.length ? ` — ${ignoredReasons.join(', ')}` : ''}`;
  $('#ignored tbody').replaceChildren(...(s.ignored?.items ?? []).map((r) => row([fileOf(r.uri), r.reason, r.detail])));
  $('#dead tbody').replaceChildren(...s.deadLettered.items.map((d) => row([d.topic, d.reason, String(d.deliveryAttempt), d.at])));
  $('#faults').replaceChildren(
    ...(s.faults?.length
      ? s.faults.map((f) => el('li', { class: 'fault', text: f.message ?? JSON.stringify(f) }))
      : [el('li', { class: 'muted', text: 'none' })]),
  );

  if (history.length >= 2) {
    const t0 = history[0].t;
    $('#ingest-chart').replaceChildren(
      lineChart({
        title: 'Indexed images, last minutes',
        xLabel: 'seconds',
        yLabel: 'images',
        series: [{ name: 'indexed', points: history.map((h) => ({ x: (h.t - t0) / 1000, y: h.indexed })) }],
      }),
    );
  }
}

export function initPipeline() {
  let last = null;
  on('status', (data) => {
    last = data;
    const now = Date.now();
    history.push({ t: now, indexed: data.status.indexed });
    while (history.length && now - history[0].t > HISTORY_MS) history.shift();
    render(data);
  });
  on('upload-state', (s) => {
    if (s.state === 'indexed' && typeof s.lagMs === 'number') {
      lags.push(s.lagMs / 1000);
      if (lags.length > 50) lags.shift();
      if (last) render(last);
    }
  });
}
