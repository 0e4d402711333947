import sharp from 'sharp';

/**
 * Metrics history as a PNG: one line per metric across model versions (SVG drawn here, rasterised
 * by sharp/librsvg), so the CLI and reports can show whether retraining helped at a glance.
 */
export interface MetricsHistoryEntry {
  version: string;
  metrics: {
    imageToImage?: Record<string, number> | null;
    textToImage?: Record<string, number> | null;
  } | null;
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

export function metricsPlotSvg(history: MetricsHistoryEntry[], options: { width?: number; height?: number; title?: string } = {}): string {
  const width = options.width ?? 800;
  const height = options.height ?? 420;
  const margin = { left: 60, right: 190, top: 40, bottom: 80 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const series = new Map<string, (number | null)[]>();
  history.forEach((entry, i) => {
    for (const [group, prefix] of [
      ['imageToImage', 'image→image'],
      ['textToImage', 'text→image'],
    ] as const) {
      for (const [name, value] of Object.entries(entry.metrics?.[group] ?? {})) {
        if (typeof value !== 'number' || !Number.isFinite(value)) continue;
        const key = `${prefix} ${name}`;
        if (!series.has(key)) series.set(key, new Array<number | null>(history.length).fill(null));
        series.get(key)![i] = value;
      }
    }
  });
  const x = (i: number) => margin.left + (history.length <= 1 ? plotW / 2 : (i * plotW) / (history.length - 1));
  const y = (v: number) => margin.top + plotH * (1 - Math.max(0, Math.min(1, v)));
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${margin.left}" y="24" font-size="16">${escapeXml(options.title ?? 'Held-out retrieval metrics by model version')}</text>`,
  ];
  for (let t = 0; t <= 10; t += 2) {
    const v = t / 10;
    parts.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${margin.left - 8}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`);
  }
  history.forEach((entry, i) => {
    parts.push(`<text transform="translate(${x(i)},${margin.top + plotH + 14}) rotate(30)" font-size="10">${escapeXml(entry.version.slice(0, 28))}</text>`);
  });
  [...series.entries()].forEach(([name, values], s) => {
    const color = COLORS[s % COLORS.length]!;
    const points = values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter((p): p is string => p !== null);
    if (points.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.join(' ')}"/>`);
    for (const p of points) {
      const [px, py] = p.split(',');
      parts.push(`<circle cx="${px}" cy="${py}" r="3.5" fill="${color}"/>`);
    }
    const ly = margin.top + 10 + s * 18;
    parts.push(`<rect x="${width - margin.right + 15}" y="${ly - 9}" width="12" height="12" fill="${color}"/>`);
    parts.push(`<text x="${width - margin.right + 32}" y="${ly + 1}">${escapeXml(name)}</text>`);
  });
  if (series.size === 0) parts.push(`<text x="${margin.left + 20}" y="${margin.top + plotH / 2}">no metrics recorded yet</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

export async function renderMetricsPlot(history: MetricsHistoryEntry[], options: { width?: number; height?: number; title?: string } = {}): Promise<Buffer> {
  return sharp(Buffer.from(metricsPlotSvg(history, options)))
    .png()
    .toBuffer();
}
