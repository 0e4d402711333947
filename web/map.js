// The collection map: a 2-D projection of the collection's embeddings (computed by the server,
// GET /api/map), drawn on a canvas in chunks of a few milliseconds each so the page stays
// responsive with 10,000 points; coloured by k-means cluster or by label; hover shows the
// thumbnail, click selects the image and finds more like it; a silhouette-over-k chart; the
// current query and its results are marked (GET /api/map/locate).
import { $, el, emit, fmtNumber, getJson, on, say } from './dom.js';
import { lineChart } from './charts.js';
import { resultCard, searchSimilar, openDetail } from './search.js';

// Tableau 10 plus two: distinguishable categorical colours; grey for "no label".
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac', '#1f77b4', '#8c564b'];
const NO_LABEL = '#c8c8c8';
const CHUNK_MS = 8;
const CELL = 8;
const PAD = 12;

let data = null;
let view = null; // { sx, sy, px: Float32Array, py: Float32Array, colours: string[], colourOf: Uint16Array, grid: Map }
let hovered = -1;
let selectedIdx = -1;
let marks = { query: null, results: [] };
let drawToken = 0;
let lastSearch = null;

const canvas = () => $('#map-canvas');

function fit() {
  const c = canvas();
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(320, Math.round(c.clientWidth || 720));
  const h = Math.round(w * 0.68);
  if (c.width !== Math.round(w * ratio)) {
    c.width = Math.round(w * ratio);
    c.height = Math.round(h * ratio);
  }
  return { w, h, ratio };
}

/** Screen positions, colours and a grid for hit tests: arrays, no per-point objects. */
function layout() {
  const { w, h } = fit();
  const pts = data.points;
  let x0 = Infinity,
    x1 = -Infinity,
    y0 = Infinity,
    y1 = -Infinity;
  for (const p of pts) {
    if (p.x < x0) x0 = p.x;
    if (p.x > x1) x1 = p.x;
    if (p.y < y0) y0 = p.y;
    if (p.y > y1) y1 = p.y;
  }
  const sx = (x) => PAD + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * PAD);
  const sy = (y) => h - PAD - ((y - y0) / (y1 - y0 || 1)) * (h - 2 * PAD);
  const px = new Float32Array(pts.length);
  const py = new Float32Array(pts.length);
  const byLabel = colourKey();
  const colourOf = new Uint16Array(pts.length);
  const grid = new Map();
  for (let i = 0; i < pts.length; i++) {
    px[i] = sx(pts[i].x);
    py[i] = sy(pts[i].y);
    colourOf[i] = byLabel.index(pts[i]);
    const key = `${Math.floor(px[i] / CELL)},${Math.floor(py[i] / CELL)}`;
    let cell = grid.get(key);
    if (!cell) grid.set(key, (cell = []));
    cell.push(i);
  }
  view = { sx, sy, px, py, colours: byLabel.colours, names: byLabel.names, colourOf, grid, w, h };
}

/** Colour index per point: its cluster, or its label (most frequent labels first; beyond the palette, grey). */
function colourKey() {
  const mode = $('#map-color').value;
  if (mode === 'label') {
    const counts = new Map();
    for (const p of data.points) if (p.label !== null) counts.set(p.label, (counts.get(p.label) ?? 0) + 1);
    const labels = [...counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([l]) => l)
      .slice(0, PALETTE.length);
    const idx = new Map(labels.map((l, i) => [l, i]));
    return {
      colours: [...labels.map((_, i) => PALETTE[i]), NO_LABEL],
      names: [...labels, counts.size > labels.length ? 'other labels / none' : 'no label'],
      index: (p) => (p.label !== null && idx.has(p.label) ? idx.get(p.label) : labels.length),
    };
  }
  const k = Math.max(1, data.k);
  return {
    colours: Array.from({ length: k }, (_, i) => PALETTE[i % PALETTE.length]),
    names: Array.from({ length: k }, (_, i) => `cluster ${i + 1}`),
    index: (p) => p.cluster % k,
  };
}

/** Draws every point, a chunk per animation frame (each ≤ CHUNK_MS), grouped by colour; resolves when done. */
function draw() {
  const token = ++drawToken;
  const c = canvas();
  const { ratio } = fit();
  const ctx = c.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, view.w, view.h);
  const order = new Uint32Array(view.px.length);
  // Counting sort by colour: one fillStyle change per colour.
  const counts = new Uint32Array(view.colours.length + 1);
  for (let i = 0; i < view.colourOf.length; i++) counts[view.colourOf[i] + 1]++;
  for (let i = 1; i < counts.length; i++) counts[i] += counts[i - 1];
  for (let i = 0; i < view.colourOf.length; i++) order[counts[view.colourOf[i]]++] = i;
  // Larger dots for a small collection, 3 px once there are thousands.
  const size = order.length < 1000 ? 6 : order.length < 4000 ? 4 : 3;
  const half = size / 2;
  let next = 0;
  return new Promise((resolve) => {
    const step = () => {
      if (token !== drawToken) return resolve(false);
      const until = performance.now() + CHUNK_MS;
      let colour = -1;
      while (next < order.length && performance.now() < until) {
        const end = Math.min(order.length, next + 500);
        for (; next < end; next++) {
          const i = order[next];
          if (view.colourOf[i] !== colour) {
            colour = view.colourOf[i];
            ctx.fillStyle = view.colours[colour];
          }
          ctx.fillRect(view.px[i] - half, view.py[i] - half, size, size);
        }
      }
      if (next < order.length) requestAnimationFrame(step);
      else {
        drawMarks();
        resolve(true);
      }
    };
    requestAnimationFrame(step);
  });
}

/** Hover ring, selection, and the current query (a cross) and its results (rings), over the points. */
function drawMarks() {
  const c = $('#map-overlay');
  if (!view) return;
  const ratio = window.devicePixelRatio || 1;
  c.width = canvas().width;
  c.height = canvas().height;
  const ctx = c.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.lineWidth = 2;
  ctx.strokeStyle = '#111';
  for (const r of marks.results) {
    ctx.beginPath();
    ctx.arc(view.sx(r.x), view.sy(r.y), 6, 0, Math.PI * 2);
    ctx.stroke();
  }
  if (marks.query) {
    const x = view.sx(marks.query.x);
    const y = view.sy(marks.query.y);
    ctx.strokeStyle = '#d00';
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(x - 8, y - 8);
    ctx.lineTo(x + 8, y + 8);
    ctx.moveTo(x + 8, y - 8);
    ctx.lineTo(x - 8, y + 8);
    ctx.stroke();
  }
  for (const [i, colour] of [
    [selectedIdx, '#7a00cc'],
    [hovered, '#000'],
  ]) {
    if (i < 0) continue;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(view.px[i], view.py[i], 9, 0, Math.PI * 2);
    ctx.stroke();
  }
}

function nearest(x, y, radius = 8) {
  let best = -1;
  let bestD = radius * radius;
  const cx = Math.floor(x / CELL);
  const cy = Math.floor(y / CELL);
  const r = Math.ceil(radius / CELL);
  for (let gx = cx - r; gx <= cx + r; gx++) {
    for (let gy = cy - r; gy <= cy + r; gy++) {
      for (const i of view.grid.get(`${gx},${gy}`) ?? []) {
        const d = (view.px[i] - x) ** 2 + (view.py[i] - y) ** 2;
        if (d <= bestD) {
          bestD = d;
          best = i;
        }
      }
    }
  }
  return best;
}

function showHover(i) {
  const img = $('#map-hover-img');
  if (i < 0) return;
  const p = data.points[i];
  img.src = `/api/images/${encodeURIComponent(p.id)}/thumbnail`;
  img.alt = p.name;
  img.hidden = false;
  $('#map-hover-hint').hidden = true;
  $('#map-hover-name').textContent = `${p.name}${p.label ? ` · ${p.label}` : ''} · cluster ${p.cluster + 1}`;
}

/** Selects a point: shows it, finds more like it (the search view too), lists and marks its neighbours. */
async function choose(i) {
  if (i < 0) return;
  selectedIdx = i;
  const p = data.points[i];
  showHover(i);
  drawMarks();
  const list = $('#map-neighbours');
  list.replaceChildren();
  $('#map-neighbours-title').textContent = `Neighbours of ${p.name}`;
  try {
    const res = await getJson(`/api/search?${new URLSearchParams({ similarTo: p.id, k: '13' })}`);
    const near = res.results.filter((h) => h.id !== p.id).slice(0, 12);
    list.replaceChildren(...near.map((h) => resultCard(h, { small: true, onOpen: (x) => openDetail(x.id), onMore: (x) => searchSimilar(x.id, x.name) })));
    emit('search-done', { queryId: res.queryId ?? null, ids: res.results.map((r) => r.id), title: `More like ${p.name}`, fromMap: true, results: res });
  } catch (err) {
    say($('#map-info'), `Cannot find neighbours of ${p.name}: ${err.message}`, 'error');
  }
}

async function locate(search) {
  marks = { query: null, results: [] };
  if (!data || !search) return drawMarks();
  try {
    const params = new URLSearchParams({ ids: search.ids.slice(0, 100).join(',') });
    if (search.queryId) params.set('queryId', search.queryId);
    const where = await getJson(`/api/map/locate?${params}`);
    marks = { query: where.query, results: where.results };
  } catch {
    // Not on the map (outside the sample, or no map here): nothing to mark.
  }
  drawMarks();
}

function legend() {
  $('#map-legend').replaceChildren(
    ...view.colours.map((colour, i) => {
      const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      svg.setAttribute('width', '12');
      svg.setAttribute('height', '12');
      svg.setAttribute('aria-hidden', 'true');
      const r = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
      for (const [k, v] of Object.entries({ width: 12, height: 12, fill: colour })) r.setAttribute(k, String(v));
      svg.append(r);
      return el('li', {}, svg, ` ${view.names[i]}`);
    }),
  );
}

function silhouette() {
  const box = $('#silhouette-chart');
  if (!data.silhouette?.length) return box.replaceChildren(el('p', { class: 'muted', text: 'no silhouette scores (too few points to cluster)' }));
  box.replaceChildren(
    lineChart({
      title: 'Silhouette score over k (higher: better separated clusters)',
      xLabel: 'k (clusters)',
      yLabel: 'silhouette',
      markers: [{ x: data.k, label: `k = ${data.k}` }],
      series: [{ name: 'silhouette', points: data.silhouette.map((s) => ({ x: s.k, y: s.score })) }],
    }),
  );
  const select = $('#map-k');
  const current = select.value;
  select.replaceChildren(
    el('option', { value: 'auto', text: `auto (best silhouette${data.k ? `: ${data.k}` : ''})` }),
    ...data.silhouette.map((s) => el('option', { value: String(s.k), text: `${s.k} (silhouette ${s.score.toFixed(3)})` })),
  );
  select.value = [...select.options].some((o) => o.value === current) ? current : 'auto';
}

/** Loads the map and draws it; performance marks 'map-data' and 'map-drawn' time it (bench/page-map.ts). */
export async function loadMap() {
  const info = $('#map-info');
  const params = new URLSearchParams({ sample: String($('#map-sample').value || 2000), color: $('#map-color').value, k: $('#map-k').value });
  say(info, 'Computing the map…');
  try {
    const res = await fetch(`/api/map?${params}`);
    if (res.status === 404) {
      const body = await res.json().catch(() => ({}));
      say(info, body.code === 'NOT_FOUND' && /no route/.test(body.error ?? '') ? 'This deployment has no collection map.' : (body.error ?? 'no map'), 'error');
      return false;
    }
    const next = await res.json();
    if (!res.ok) throw new Error(next.error ?? `HTTP ${res.status}`);
    performance.mark('map-data');
    data = next;
    hovered = -1;
    selectedIdx = -1;
    layout();
    legend();
    silhouette();
    const done = await draw();
    if (!done) return false;
    performance.mark('map-drawn');
    canvas().dataset.points = String(data.points.length);
    say(
      info,
      `${fmtNumber(data.points.length)} of ${fmtNumber(data.total)} images, ${data.method.toUpperCase()} projection, k = ${data.k}; computed ${data.computedAt}.`,
    );
    await locate(lastSearch);
    return true;
  } catch (err) {
    say(info, `The map could not be computed: ${err.message}`, 'error');
    return false;
  }
}

export function initMap() {
  const c = canvas();
  // The overlay (marks, hover) sits on the same grid cell as the map (style.css .map-stack).
  const overlay = el('canvas', { id: 'map-overlay', 'aria-hidden': 'true', width: c.width, height: c.height });
  const stack = el('div', { class: 'map-stack' });
  c.replaceWith(stack);
  stack.append(c, overlay);
  let loaded = false;
  $('#map-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    loadMap();
  });
  $('#map-color').addEventListener('change', () => {
    if (!data) return;
    layout();
    legend();
    draw();
  });
  on('view', (v) => {
    if (v === 'map' && !loaded) {
      loaded = true;
      loadMap();
    }
  });
  c.addEventListener('mousemove', (ev) => {
    if (!view) return;
    const r = c.getBoundingClientRect();
    const i = nearest(ev.clientX - r.left, ev.clientY - r.top);
    if (i !== hovered) {
      hovered = i;
      showHover(i);
      drawMarks();
    }
  });
  c.addEventListener('click', (ev) => {
    if (!view) return;
    const r = c.getBoundingClientRect();
    choose(nearest(ev.clientX - r.left, ev.clientY - r.top));
  });
  // Keyboard: arrows step through the points left to right, Enter selects, o opens the detail view.
  c.addEventListener('keydown', (ev) => {
    if (!view) return;
    const byX = view.byX ?? (view.byX = [...view.px.keys()].sort((a, b) => view.px[a] - view.px[b]));
    const at = Math.max(0, byX.indexOf(hovered));
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowDown') hovered = byX[Math.min(byX.length - 1, hovered < 0 ? 0 : at + 1)];
    else if (ev.key === 'ArrowLeft' || ev.key === 'ArrowUp') hovered = byX[Math.max(0, at - 1)];
    else if (ev.key === 'Enter' && hovered >= 0) return void (ev.preventDefault(), choose(hovered));
    else if (ev.key === 'o' && hovered >= 0) return void openDetail(data.points[hovered].id);
    else return;
    ev.preventDefault();
    showHover(hovered);
    drawMarks();
  });
  on('search-done', (search) => {
    lastSearch = search;
    if (data) locate(search);
  });
}
