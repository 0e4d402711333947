// The local and cloud search page: plain ES modules, no build step. This module wires the views
// (tabs), the live status stream (server-sent events) and the model line; each view is its own module.
import { $, $$, emit, fmtNumber, getJson, on } from './dom.js';
import { initSearch } from './search.js';
import { initUpload } from './upload.js';
import { initPipeline } from './pipeline.js';
import { initModels } from './models.js';
import { initMap } from './map.js';
import { initMonitor } from './monitor.js';

const tabs = $$('[role="tab"]');

function select(tab, focus = false) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute('aria-controls')}`).hidden = !on;
  }
  if (focus) tab.focus();
  const view = tab.id.replace('tab-', '');
  if (location.hash !== `#${view}`) history.replaceState(null, '', `#${view}`);
  emit('view', view);
}

for (const [i, tab] of tabs.entries()) {
  tab.addEventListener('click', () => select(tab));
  // Arrow keys move between tabs (WAI-ARIA tabs pattern), Home/End to the first/last.
  tab.addEventListener('keydown', (ev) => {
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    select(tabs[(next + tabs.length) % tabs.length], true);
  });
}
on('show-view', (view) => select($(`#tab-${view}`)));

function showModel(s) {
  $('#model-line').textContent = s.model
    ? `model ${s.model.version} (${s.model.dimension}-d${s.model.hasTextTower ? ', text search on' : ', image search only'}) · ${fmtNumber(s.indexed)} images indexed`
    : (s.notice ?? 'no model yet: searches start working once the first model is registered');
}

/**
 * Live status: one EventSource; the browser reconnects by itself (the server says retry: 2000).
 * Until the first event (or if the stream is refused) one GET /api/status fills the page.
 */
function connect() {
  const live = $('#live-line');
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => (live.textContent = 'live status: connected'));
  source.addEventListener('error', () => (live.textContent = 'live status: reconnecting…'));
  source.addEventListener('status', (ev) => {
    const data = JSON.parse(ev.data);
    showModel(data.status);
    emit('status', data);
  });
  source.addEventListener('upload', (ev) => emit('upload-state', JSON.parse(ev.data)));
  getJson('/api/status')
    .then((status) => {
      showModel(status);
      emit('status', { status, ingestRate: null, estimatedLagSeconds: null });
    })
    .catch((err) => ($('#model-line').textContent = `status unavailable: ${err.message}`));
}

initSearch();
initUpload();
initPipeline();
initModels();
initMap();
initMonitor();
connect();
const start = tabs.find((t) => t.id === `tab-${location.hash.slice(1)}`);
if (start) select(start);
