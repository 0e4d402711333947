// Inline SVG charts (line and horizontal bar): drawn with DOM calls, coloured by CSS classes, each
// an <svg role="img"> with a title and a text description for screen readers.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function niceTicks(min, max, count = 4) {
  if (!(max > min)) return [min];
  const step = 10 ** Math.floor(Math.log10((max - min) / count));
  const mult = [1, 2, 5, 10].find((m) => (max - min) / (step * m) <= count) ?? 10;
  const unit = step * mult;
  const ticks = [];
  for (let t = Math.ceil(min / unit) * unit; t <= max + unit * 1e-9; t += unit) ticks.push(Number(t.toFixed(10)));
  return ticks;
}

const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2).replace(/\.?0+$/, '') : v.toFixed(3).replace(/\.?0+$/, ''));

/**
 * A line chart: series [{ name, points: [{x, y}] }] (null y values leave a gap), optional vertical
 * markers [{ x, label }] (e.g. the best epoch); xMin/xMax fix the x range (default: the points'). Returns an <svg>.
 */
export function lineChart({ title, label, series, xLabel = '', yLabel = '', width = 460, height = 240, xMin, xMax, yMin, yMax, markers = [], description }) {
  const pad = { l: 52, r: 14, t: 44, b: 36 };
  const all = series.flatMap((sr) => sr.points.filter((p) => p.y !== null && Number.isFinite(p.y)));
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const x0 = xMin ?? Math.min(...xs, ...markers.map((m) => m.x));
  const x1 = xMax ?? Math.max(...xs, ...markers.map((m) => m.x));
  let y0 = yMin ?? Math.min(...ys);
  let y1 = yMax ?? Math.max(...ys);
  if (!(y1 > y0)) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0 || 1)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const desc =
    description ??
    series
      .map((sr) => {
        const pts = sr.points.filter((p) => p.y !== null);
        return pts.length ? `${sr.name}: ${pts.length} points from ${fmt(pts[0].y)} to ${fmt(pts[pts.length - 1].y)}` : `${sr.name}: no points`;
      })
      .join('; ');
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': `${label ?? title}. ${desc}`, class: 'chart' });
  svg.append(s('title', {}, label ?? title));
  svg.append(s('text', { x: pad.l, y: 16, class: 'chart-title' }, title));
  const grid = s('g', { class: 'axis' });
  for (const t of niceTicks(y0, y1)) {
    grid.append(s('line', { x1: pad.l, x2: width - pad.r, y1: sy(t), y2: sy(t), class: 'gridline' }));
    grid.append(s('text', { x: pad.l - 6, y: sy(t) + 4, 'text-anchor': 'end' }, fmt(t)));
  }
  for (const t of niceTicks(x0, x1, 6)) grid.append(s('text', { x: sx(t), y: height - pad.b + 16, 'text-anchor': 'middle' }, fmt(t)));
  grid.append(s('text', { x: (pad.l + width - pad.r) / 2, y: height - 4, 'text-anchor': 'middle', class: 'axis-label' }, xLabel));
  grid.append(
    s(
      'text',
      { x: 12, y: (pad.t + height - pad.b) / 2, transform: `rotate(-90 12 ${(pad.t + height - pad.b) / 2})`, 'text-anchor': 'middle', class: 'axis-label' },
      yLabel,
    ),
  );
  svg.append(grid);
  for (const m of markers) {
    svg.append(s('line', { x1: sx(m.x), x2: sx(m.x), y1: pad.t, y2: height - pad.b, class: 'marker' }));
    const right = sx(m.x) > width * 0.7;
    svg.append(s('text', { x: sx(m.x) + (right ? -4 : 4), y: pad.t + 10, 'text-anchor': right ? 'end' : 'start', class: 'marker-label' }, m.label));
  }
  series.forEach((sr, i) => {
    let d = '';
    let pen = false;
    for (const p of sr.points) {
      if (p.y === null || !Number.isFinite(p.y)) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`;
      pen = true;
    }
    svg.append(s('path', { d, class: `series series-${i}`, fill: 'none' }));
    for (const p of sr.points.length <= 60 ? sr.points : [])
      if (p.y !== null) svg.append(s('circle', { cx: sx(p.x), cy: sy(p.y), r: 2.5, class: `dot series-${i}` }));
    // The legend: one row under the title, never over the data.
    const lx = pad.l + i * 130;
    svg.append(s('line', { x1: lx, x2: lx + 16, y1: 30, y2: 30, class: `series series-${i}` }));
    svg.append(s('text', { x: lx + 20, y: 34, class: 'legend' }, sr.name));
  });
  return svg;
}

/** Horizontal bars [{ label, value }] with their values written beside. */
export function barChart({ title, bars, width = 460, barHeight = 22 }) {
  const pad = { l: 150, r: 50, t: 24 };
  const height = pad.t + bars.length * (barHeight + 6) + 6;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': `${title}. ${bars.map((b) => `${b.label}: ${b.value}`).join('; ') || 'none'}`,
    class: 'chart',
  });
  svg.append(s('title', {}, title));
  svg.append(s('text', { x: 0, y: 16, class: 'chart-title' }, title));
  bars.forEach((b, i) => {
    const y = pad.t + i * (barHeight + 6);
    const w = ((width - pad.l - pad.r) * b.value) / max;
    svg.append(s('text', { x: pad.l - 6, y: y + barHeight * 0.7, 'text-anchor': 'end' }, b.label));
    svg.append(s('rect', { x: pad.l, y, width: Math.max(1, w), height: barHeight, class: `bar series-${i % 6}` }));
    svg.append(s('text', { x: pad.l + w + 4, y: y + barHeight * 0.7 }, String(b.value)));
  });
  return svg;
}
