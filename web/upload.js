// Adding images from the page: each file is sent to POST /api/uploads (locally: into the watched folder),
// or, where the server says `uploads: 'signed-url'` (the cloud service), PUT straight to the images bucket
// through a URL the server signed for it (POST /api/uploads/sign); then it is followed through the live
// event stream until it is searchable, or rejected with the pipeline's reason.
import { $, el, fmtBytes, getJson, on, say } from './dom.js';
import { acceptDrops, pickerButton, searchSimilar } from './search.js';

/** name → [{ li, started }] for the uploads of this page (a name sent twice has two rows; the refused one stays failed). */
const rows = new Map();
let config = { enabled: false };

function row(file) {
  const progress = el('progress', { max: '100', value: '0', 'aria-label': `upload of ${file.name}` });
  const state = el('span', { class: 'state', text: 'sending…' });
  const reason = el('span', { class: 'reason' });
  const li = el(
    'li',
    { class: 'upload', dataset: { name: file.name, state: 'sending' } },
    el('span', { class: 'name', text: file.name }),
    el('span', { class: 'size', text: fmtBytes(file.size) }),
    progress,
    state,
    reason,
  );
  $('#upload-list').prepend(li);
  return { li, progress, state, reason };
}

function setState(r, state, text, reason = '') {
  r.li.dataset.state = state;
  r.state.textContent = text;
  r.reason.textContent = reason;
  if (state !== 'sending') r.progress.value = 100;
}

/**
 * Why Cloud Storage refused a signed PUT, from its XML error (cloud.google.com/storage/docs/xml-api/reference-status):
 * 412 = x-goog-if-generation-match: 0 failed (the name exists), 400 EntityTooLarge/EntityTooSmall = outside
 * x-goog-content-length-range, 403 = the signature expired or does not match what was sent.
 */
export function storageRefusal(status, xml) {
  const code = /<Code>([^<]*)<\/Code>/.exec(xml ?? '')?.[1] ?? '';
  if (status === 412) return 'an image with that name is already in the bucket: rename the file, or delete the existing one first';
  if (code === 'EntityTooLarge' || code === 'EntityTooSmall') return `the bucket refused its size (${code})`;
  if (status === 403) return `the upload link was refused${code ? ` (${code})` : ''}: it may have expired; add the file again`;
  return `the bucket answered HTTP ${status}${code ? ` (${code})` : ''}`;
}

/** XHR, for upload progress events (fetch has none for request bodies). `toStorage`: a signed PUT to Cloud Storage (XML errors). */
function send(method, url, body, onProgress, { headers = {}, toStorage = false } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener('progress', (ev) => ev.lengthComputable && onProgress((ev.loaded / ev.total) * 100));
    xhr.addEventListener('load', () => {
      if (toStorage) {
        if (xhr.status >= 200 && xhr.status < 300) resolve({});
        else reject(new Error(storageRefusal(xhr.status, xhr.responseText)));
        return;
      }
      let data;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : {};
      } catch {
        data = {};
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new Error(data.error ?? `HTTP ${xhr.status}`));
    });
    xhr.addEventListener('error', () =>
      reject(new Error(toStorage ? 'the connection to Cloud Storage failed (or its CORS settings refused this page)' : 'the connection failed')),
    );
    xhr.send(body);
  });
}

/**
 * Cloud: the server checks the name, type and size and signs a PUT of exactly this object
 * (POST /api/uploads/sign); the bytes then go from the browser to the bucket with every signed header.
 * `io` is for tests (the real fetch and XHR otherwise).
 */
export async function uploadSigned(file, onProgress, { onSigned = () => {}, io = { getJson, send } } = {}) {
  const signed = await io.getJson('/api/uploads/sign', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: file.name, type: file.type, size: file.size }),
  });
  onSigned(signed);
  await io.send(signed.method, signed.url, file, onProgress, { headers: signed.headers, toStorage: true });
  return signed;
}

/**
 * Local: the file goes to POST /api/uploads as the multipart field "file"; the answer names the object
 * stored ({name, id, generation, size}). `io` is for tests (the real XHR otherwise).
 */
export async function uploadLocal(file, onProgress, { onStored = () => {}, io = { send } } = {}) {
  const form = new FormData();
  form.append('file', file, file.name);
  const stored = await io.send('POST', '/api/uploads', form, onProgress);
  onStored(stored);
  return stored;
}

/** The object name the server gives a file: the prefix and the name trimmed and in NFC (shared/http/upload.ts uploadObjectName). */
export function expectedObjectName(prefix, fileName) {
  return `${prefix ?? ''}${fileName.normalize('NFC').trim()}`;
}

/** Follow the last row under `name` also under `object`, the name the server answered with (when it differs). */
export function followAlso(rows, name, object) {
  const entry = rows.get(name)?.at(-1);
  if (!entry || !object || object === name) return;
  const under = rows.get(object) ?? [];
  if (!under.includes(entry)) rows.set(object, [...under, entry]);
}

async function uploadOne(file) {
  const r = row(file);
  const name = expectedObjectName(config.prefix, file.name);
  rows.set(name, [...(rows.get(name) ?? []), { ...r, started: performance.now() }]);
  try {
    if (file.size > config.maxBytes) throw new Error(`${fmtBytes(file.size)} is over the ${fmtBytes(config.maxBytes)} limit`);
    // Either way, the object is followed under the name the server answered with (it normalises names).
    if (config.uploads === 'signed-url') {
      await uploadSigned(file, (p) => (r.progress.value = p), { onSigned: (signed) => followAlso(rows, name, signed.object) });
    } else {
      await uploadLocal(file, (p) => (r.progress.value = p), { onStored: (stored) => followAlso(rows, name, stored.name) });
    }
    // The event stream may have said more already (a small file indexed before the answer arrived).
    if (r.li.dataset.state === 'sending') setState(r, 'pending', 'uploaded · waiting to be indexed…');
  } catch (err) {
    setState(r, 'failed', 'not uploaded', err.message);
  }
}

function uploadAll(files) {
  if (!config.enabled) return say($('#upload-message'), 'This deployment does not take uploads from the page.', 'error');
  say($('#upload-message'), `${files.length} file${files.length === 1 ? '' : 's'} sent; each is followed below.`);
  // One at a time keeps the order readable and the server's upload slots free for others.
  return files.reduce((p, f) => p.then(() => uploadOne(f)), Promise.resolve());
}

export function initUpload() {
  const zone = $('#upload-zone');
  const input = $('#upload-input');
  input.addEventListener('change', () => {
    uploadAll([...input.files]);
    input.value = '';
  });
  pickerButton($('#choose-uploads'), input);
  acceptDrops(zone, uploadAll);
  getJson('/api/uploads')
    .then((c) => {
      config = c;
      $('#upload-where').textContent = c.enabled
        ? `${c.uploads === 'signed-url' ? 'Sent straight to the images bucket' : 'Written into the watched bucket folder'}${c.prefix ? ` under ${c.prefix}` : ''}; ${c.types.join(', ')} up to ${fmtBytes(c.maxBytes)}; an existing name is never replaced.`
        : 'Uploads are not available on this deployment.';
    })
    .catch((err) => ($('#upload-where').textContent = `uploads unavailable: ${err.message}`));
  on('upload-state', (s) => {
    for (const r of rows.get(s.name) ?? []) {
      if (r.li.dataset.state === 'failed') continue;
      if (s.state === 'indexed') {
        if (r.li.dataset.state !== 'indexed') setState(r, 'indexed', `searchable after ${((performance.now() - r.started) / 1000).toFixed(1)} s`);
        if (!r.li.querySelector('.open')) {
          r.li.append(
            el(
              'button',
              { type: 'button', class: 'open', 'aria-label': `More like this: ${s.name}`, onclick: () => searchSimilar(s.id, s.name) },
              'More like this',
            ),
          );
        }
      } else if (s.state === 'rejected' || s.state === 'ignored')
        setState(r, s.state, s.state === 'rejected' ? 'rejected' : 'not indexed', `${s.reason}: ${s.detail}`);
      else if (r.li.dataset.state !== 'sending') setState(r, 'pending', 'uploaded · waiting to be indexed…');
    }
  });
}
