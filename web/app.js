// The local and cloud search page: plain ES modules, no build step.
const $ = (sel) => document.querySelector(sel);
let lastToken = null;

function setMessage(text) {
  $('#message').textContent = text ?? '';
}

async function asJson(res) {
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
  return body;
}

function renderResults(data, title) {
  lastToken = data.feedbackToken ?? null;
  $('#results-title').textContent = `${title} — ${data.results.length} results (model ${data.modelVersion})`;
  const grid = $('#results');
  grid.replaceChildren();
  for (const hit of data.results) {
    const card = document.createElement('figure');
    card.className = 'card result';
    card.dataset.id = hit.id;
    const img = document.createElement('img');
    img.src = hit.thumbnailUrl;
    img.alt = hit.name;
    img.loading = 'lazy';
    img.addEventListener('click', () => {
      sendFeedback(hit.id, 'open');
      window.open(hit.thumbnailUrl, '_blank');
    });
    const caption = document.createElement('figcaption');
    const name = document.createElement('div');
    name.className = 'name';
    name.textContent = hit.name + (hit.labels?.length ? ` [${hit.labels.join(', ')}]` : '');
    const score = document.createElement('div');
    score.className = 'score';
    score.textContent = `score ${hit.score.toFixed(4)}`;
    const more = document.createElement('button');
    more.type = 'button';
    more.className = 'more-like-this';
    more.textContent = 'More like this';
    more.addEventListener('click', () => {
      sendFeedback(hit.id, 'more-like-this');
      searchSimilar(hit.id, hit.name);
    });
    caption.append(name, score, more);
    card.append(img, caption);
    grid.append(card);
  }
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

async function searchSimilar(id, name) {
  setMessage('');
  try {
    renderResults(await asJson(await fetch(`/api/search?similarTo=${encodeURIComponent(id)}&k=12`)), `More like ${name}`);
  } catch (err) {
    setMessage(err.message);
  }
}

$('#image-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const file = $('#image-input').files[0];
  if (!file) return setMessage('Choose an image first.');
  setMessage('Searching…');
  const form = new FormData();
  form.append('image', file);
  try {
    renderResults(await asJson(await fetch('/api/search?k=12', { method: 'POST', body: form })), `Similar to ${file.name}`);
    setMessage('');
  } catch (err) {
    setMessage(err.message);
  }
});

$('#text-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const q = $('#text-input').value.trim();
  if (!q) return;
  setMessage('Searching…');
  try {
    renderResults(await asJson(await fetch(`/api/search?q=${encodeURIComponent(q)}&k=12`)), `“${q}”`);
    setMessage('');
  } catch (err) {
    setMessage(err.message);
  }
});

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c ?? '';
    tr.append(td);
  }
  return tr;
}

async function refreshStatus() {
  try {
    const s = await asJson(await fetch('/api/status'));
    // No model yet (a new cloud stack before its bootstrap job ran): the notice says what to do.
    $('#model-line').textContent = s.model
      ? `model ${s.model.version} (${s.model.dimension}-d${s.model.hasTextTower ? ', text search on' : ', image search only'})`
      : (s.notice ?? 'no model yet: searches start working once the first model is registered');
    const counts = { indexed: s.indexed, pending: s.pending, rejected: s.rejected.count, 'dead-lettered': s.deadLettered.count };
    // The ANN index behind searches (none: exact scan; building; ready, with rows not yet folded in).
    if (s.ann) counts['ann index'] = s.ann.state === 'ready' ? `${s.ann.type}, ${s.ann.rowsUnindexed} rows not yet indexed` : s.ann.state;
    $('#counts').replaceChildren(
      ...Object.entries(counts).flatMap(([k, v]) => {
        const dt = document.createElement('dt');
        dt.textContent = k;
        const dd = document.createElement('dd');
        dd.id = `count-${k}`;
        dd.textContent = String(v);
        return [dt, dd];
      }),
    );
    $('#rejected tbody').replaceChildren(...s.rejected.items.map((r) => row([r.uri.split('/').pop(), r.reason, r.detail, r.at])));
    $('#dead tbody').replaceChildren(...s.deadLettered.items.map((d) => row([d.topic, d.reason, String(d.deliveryAttempt), d.at])));
  } catch (err) {
    $('#model-line').textContent = `status unavailable: ${err.message}`;
  }
  try {
    const models = await asJson(await fetch('/api/models'));
    $('#models tbody').replaceChildren(
      ...models.map((m) =>
        row([
          m.version,
          m.active ? 'yes' : '',
          m.parent ?? '',
          m.metrics?.imageToImage?.['recall@1']?.toFixed(3),
          m.metrics?.textToImage?.['precision@10']?.toFixed(3),
        ]),
      ),
    );
    const plot = $('#metrics-plot');
    if (models.some((m) => m.metrics)) {
      plot.src = `/api/reports/metrics.png?t=${Date.now()}`;
      plot.hidden = false;
    }
  } catch {
    /* models are optional */
  }
}

refreshStatus();
setInterval(refreshStatus, 3000);
