// Search: by image (drop, paste or choose; previewed), by text when the model has a text tower,
// a label filter and a minimum score; results with scores, labels, "more like this" and a detail
// view (the original image, its metadata and its nearest neighbours).
import { $, asJson, el, emit, fmtBytes, getJson, on, say } from './dom.js';

let lastToken = null;
let lastQueryLabel = '';
const knownLabels = new Set();

function options() {
  const params = new URLSearchParams();
  params.set('k', String(Math.min(100, Math.max(1, Number($('#k-input').value) || 24))));
  const label = $('#label-filter').value.trim();
  if (label) params.set('label', label);
  const min = Number($('#min-score').value);
  if (min > -1) params.set('minScore', String(min));
  return params;
}

function message(text, kind) {
  say($('#message'), text, kind);
}

function rememberLabels(labels) {
  let added = false;
  for (const l of labels) {
    if (!knownLabels.has(l)) {
      knownLabels.add(l);
      added = true;
    }
  }
  if (added) $('#label-options').replaceChildren(...[...knownLabels].sort().map((l) => el('option', { value: l })));
}

/** A result card: thumbnail (opens the detail view), name, labels, score, "More like this". */
export function resultCard(hit, { onOpen, onMore, small = false } = {}) {
  rememberLabels(hit.labels ?? []);
  const open = el(
    'button',
    { type: 'button', class: 'thumb', 'aria-label': `Open ${hit.name}`, onclick: () => onOpen(hit) },
    el('img', { src: hit.thumbnailUrl ?? `/api/images/${hit.id}/thumbnail`, alt: hit.name, loading: 'lazy' }),
  );
  return el(
    'li',
    { class: `card result${small ? ' small' : ''}`, dataset: { id: hit.id } },
    open,
    el('div', { class: 'name', text: hit.name }),
    hit.labels?.length ? el('div', { class: 'labels' }, ...hit.labels.map((l) => el('span', { class: 'label', text: l }))) : null,
    hit.score !== undefined ? el('div', { class: 'score', text: `score ${hit.score.toFixed(4)}` }) : null,
    el('button', { type: 'button', class: 'more-like-this', onclick: () => onMore(hit), 'aria-label': `More like this: ${hit.name}` }, 'More like this'),
  );
}

function renderResults(data, title) {
  lastToken = data.feedbackToken ?? null;
  lastQueryLabel = title;
  $('#results-title').textContent = `${title} — ${data.results.length} results (model ${data.modelVersion})`;
  $('#results').replaceChildren(
    ...data.results.map((hit) =>
      resultCard(hit, {
        onOpen: (h) => {
          sendFeedback(h.id, 'open');
          openDetail(h.id);
        },
        onMore: (h) => {
          sendFeedback(h.id, 'more-like-this');
          searchSimilar(h.id, h.name);
        },
      }),
    ),
  );
  if (data.results.length === 0) message('No results: lower the minimum score or clear the label filter.', 'info');
  emit('search-done', { queryId: data.queryId ?? null, ids: data.results.map((r) => r.id), title });
}

function sendFeedback(resultId, action) {
  if (!lastToken) return;
  fetch('/api/feedback', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    // The answer's token: the service records clicks only on results it served for that query.
    body: JSON.stringify({ token: lastToken, resultId, action }),
  }).catch(() => {});
}

export async function searchSimilar(id, name) {
  emit('show-view', 'search');
  message('Searching…');
  try {
    const params = options();
    params.set('similarTo', id);
    renderResults(await getJson(`/api/search?${params}`), `More like ${name}`);
    if ($('#message').textContent === 'Searching…') message('');
  } catch (err) {
    message(err.message, 'error');
  }
}

async function searchByImage(file) {
  if (!file) return;
  if (!file.type.startsWith('image/') && file.type !== '') return message(`${file.name || 'that file'} is not an image (${file.type}).`, 'error');
  await preview(file);
  message(`Searching with ${file.name || 'the pasted image'} (${fmtBytes(file.size)})…`);
  const form = new FormData();
  form.append('image', file, file.name || 'pasted.png');
  try {
    renderResults(await asJson(await fetch(`/api/search?${options()}`, { method: 'POST', body: form })), `Similar to ${file.name || 'the pasted image'}`);
    if ($('#message').textContent.startsWith('Searching')) message('');
  } catch (err) {
    message(err.body?.reason ? `${err.message} (${err.body.reason})` : err.message, 'error');
  }
}

/** Draws the query image into a canvas (no object URL: the page's CSP allows images from its own origin only). */
async function preview(file) {
  const canvas = $('#query-preview');
  try {
    const bitmap = await createImageBitmap(file);
    const ctx = canvas.getContext('2d');
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * scale;
    const h = bitmap.height * scale;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    canvas.setAttribute('aria-label', `preview of the query image ${file.name || '(pasted)'}`);
    canvas.hidden = false;
  } catch {
    // The browser cannot decode it (HEIC, TIFF…): the server may still; no preview.
    canvas.hidden = true;
  }
}

async function searchText(q) {
  message('Searching…');
  try {
    const params = options();
    params.set('q', q);
    renderResults(await getJson(`/api/search?${params}`), `“${q}”`);
    if ($('#message').textContent === 'Searching…') message('');
  } catch (err) {
    message(err.message, 'error');
  }
}

/** The detail view: the original image, its metadata and its nearest neighbours. */
export async function openDetail(id) {
  const dialog = $('#detail');
  $('#detail-neighbours').replaceChildren();
  $('#detail-meta').replaceChildren();
  try {
    const doc = await getJson(`/api/images/${encodeURIComponent(id)}`);
    $('#detail-title').textContent = doc.name;
    const img = $('#detail-image');
    img.src = doc.originalUrl;
    img.alt = doc.name;
    const rows = [
      ['labels', doc.labels?.join(', ') || '—'],
      ['caption', doc.caption],
      ['size', doc.width && doc.height ? `${doc.width} × ${doc.height}` : undefined],
      ['type', doc.contentType],
      ['added', doc.eventTime],
      ['indexed', doc.indexedAt],
      ['model', doc.modelVersion],
      ['id', doc.id],
    ].filter(([, v]) => v !== undefined && v !== null);
    $('#detail-meta').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    if (!dialog.open) dialog.showModal();
    const params = new URLSearchParams({ similarTo: id, k: '9' });
    const near = await getJson(`/api/search?${params}`);
    $('#detail-neighbours').replaceChildren(
      ...near.results
        .filter((h) => h.id !== id)
        .slice(0, 8)
        .map((h) => resultCard(h, { small: true, onOpen: (x) => openDetail(x.id), onMore: (x) => (dialog.close(), searchSimilar(x.id, x.name)) })),
    );
  } catch (err) {
    message(`Cannot open that image: ${err.message}`, 'error');
    if (dialog.open) dialog.close();
  }
}

function acceptDrops(zone, onFiles) {
  zone.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    zone.classList.remove('over');
    const files = [...(ev.dataTransfer?.files ?? [])];
    if (files.length) onFiles(files);
  });
}
export { acceptDrops };

/** A drop zone's button opens its (hidden) file input: the keyboard way in, since keyboards cannot drag. */
export function pickerButton(button, input) {
  button.addEventListener('click', () => input.click());
}

export function initSearch() {
  const zone = $('#query-zone');
  const input = $('#image-input');
  input.addEventListener('change', () => searchByImage(input.files[0]));
  pickerButton($('#choose-image'), input);
  acceptDrops(zone, (files) => searchByImage(files[0]));
  document.addEventListener('paste', (ev) => {
    if ($('#view-search').hidden) return;
    const file = [...(ev.clipboardData?.files ?? [])].find((f) => f.type.startsWith('image/'));
    if (file) {
      ev.preventDefault();
      searchByImage(file);
    }
  });
  $('#text-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('#text-input').value.trim();
    if (q) searchText(q);
  });
  const slider = $('#min-score');
  const showMin = () => ($('#min-score-value').textContent = Number(slider.value) > -1 ? Number(slider.value).toFixed(2) : 'off');
  slider.addEventListener('input', showMin);
  showMin();
  $('#detail-close').addEventListener('click', () => $('#detail').close());
  on('status', ({ status }) => {
    const text = Boolean(status.model?.hasTextTower);
    $('#text-input').disabled = !text;
    $('#text-form button').disabled = !text;
    const note = $('#text-note');
    note.hidden = text || !status.model;
    note.textContent = text
      ? ''
      : 'Text search needs a model with a text tower. Add labels (a sidecar <name>.json with {"labels": [...]}) and run `imgsearch retrain`; the page switches it on by itself.';
  });
  on('open-image', ({ id, name }) => {
    openDetail(id);
    searchSimilar(id, name);
  });
}

export const currentQuery = () => lastQueryLabel;
