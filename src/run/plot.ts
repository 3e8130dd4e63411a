// Charts as standalone SVG (no dependencies): grouped bars, lines and heatmaps.

export interface BarSeries {
  name: string;
  color: string;
  values: number[];
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function barChart(title: string, labels: string[], series: BarSeries[], yLabel: string): string {
  const width = 640,
    height = 360,
    left = 60,
    right = 20,
    top = 50,
    bottom = 60;
  const max = Math.max(1, ...series.flatMap((s) => s.values).filter(Number.isFinite)) * 1.15;
  const plotW = width - left - right,
    plotH = height - top - bottom;
  const groupW = plotW / labels.length;
  const barW = (groupW * 0.8) / series.length;
  const y = (v: number) => top + plotH - (v / max) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`,
    `<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(yLabel)}</text>`,
  ];
  const step = max > 10 ? 5 : max > 4 ? 1 : 0.5;
  for (let v = 0; v <= max; v += step) {
    parts.push(`<line x1="${left}" x2="${width - right}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
  }
  labels.forEach((label, g) => {
    const x0 = left + g * groupW + groupW * 0.1;
    series.forEach((s, i) => {
      const v = s.values[g];
      if (!Number.isFinite(v)) return; // no value: no bar
      const x = x0 + i * barW;
      parts.push(`<rect x="${x}" y="${y(v)}" width="${barW - 2}" height="${top + plotH - y(v)}" fill="${s.color}"/>`);
      parts.push(`<text x="${x + barW / 2 - 1}" y="${y(v) - 4}" text-anchor="middle" font-size="11">${v.toFixed(2)}</text>`);
    });
    parts.push(`<text x="${left + g * groupW + groupW / 2}" y="${top + plotH + 18}" text-anchor="middle">${escape(label)}</text>`);
  });
  series.forEach((s, i) => {
    const x = left + i * 190;
    parts.push(`<rect x="${x}" y="${height - 22}" width="12" height="12" fill="${s.color}"/>`);
    parts.push(`<text x="${x + 18}" y="${height - 12}">${escape(s.name)}</text>`);
  });
  parts.push(`<line x1="${left}" x2="${width - right}" y1="${y(0)}" y2="${y(0)}" stroke="black"/>`, "</svg>");
  return parts.join("\n") + "\n";
}

export interface LineSeries {
  name: string;
  color: string;
  points: [number, number][];
  /** Drawn dashed (and so in the legend): told apart from a solid line of the same colour. */
  dashed?: boolean;
}

/** Lines over a shared x axis, as a standalone SVG; the y axis spans the data. */
/** `xFromData`: the x axis spans the data only (log axes), instead of starting at 0 (steps, positions). */
export function lineChart(title: string, series: LineSeries[], xLabel: string, yLabel: string, xFromData = false): string {
  // the legend takes rows of three entries below the plot
  const legendRows = Math.max(1, Math.ceil(series.length / 3));
  const width = 640,
    height = 380 + 20 * (legendRows - 1),
    left = 64,
    right = 20,
    top = 50,
    bottom = 70 + 20 * (legendRows - 1);
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map((p) => p[0]),
    ys = all.map((p) => p[1]);
  let x0 = Math.min(...xs, ...(xFromData ? [] : [0])),
    x1 = Math.max(...xs, ...(xFromData ? [] : [1]));
  if (!(x1 > x0)) [x0, x1] = [x0 - 1, x0 + 1];
  let y0 = Math.min(...ys),
    y1 = Math.max(...ys);
  if (!(y1 > y0)) [y0, y1] = [y0 - 1, y0 + 1];
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const plotW = width - left - right,
    plotH = height - top - bottom;
  const px = (x: number) => left + ((x - x0) / (x1 - x0)) * plotW;
  const py = (y: number) => top + plotH - ((y - y0) / (y1 - y0)) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`,
    `<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(yLabel)}</text>`,
    `<text x="${left + plotW / 2}" y="${top + plotH + 36}" text-anchor="middle">${escape(xLabel)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const y = y0 + ((y1 - y0) * i) / 5,
      x = x0 + ((x1 - x0) * i) / 5;
    parts.push(`<line x1="${left}" x2="${width - right}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${py(y) + 4}" text-anchor="end">${y.toPrecision(3)}</text>`);
    parts.push(`<text x="${px(x)}" y="${top + plotH + 18}" text-anchor="middle">${Number(x.toPrecision(3))}</text>`);
  }
  for (const s of series) {
    const d = s.points
      .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
      .map(([x, y], i) => `${i ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`)
      .join("");
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"${s.dashed ? ' stroke-dasharray="6 3"' : ""}/>`);
  }
  series.forEach((s, i) => {
    const x = left + (i % 3) * 190,
      y = height - 22 - 20 * (legendRows - 1 - Math.floor(i / 3));
    parts.push(
      s.dashed
        ? `<line x1="${x}" x2="${x + 12}" y1="${y + 6}" y2="${y + 6}" stroke="${s.color}" stroke-width="2" stroke-dasharray="4 2"/>`
        : `<rect x="${x}" y="${y}" width="12" height="12" fill="${s.color}"/>`,
    );
    parts.push(`<text x="${x + 18}" y="${y + 10}">${escape(s.name)}</text>`);
  });
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="black"/>`, "</svg>");
  return parts.join("\n") + "\n";
}

/** A grid of values in [0, 1] (e.g. accuracy), rows × columns, as a standalone SVG heatmap. */
export function heatmap(
  title: string,
  rowLabels: string[],
  columnLabels: string[],
  values: number[][],
  rowTitle: string,
  columnTitle: string,
): string {
  const cell = 56,
    left = 110,
    top = 60,
    width = left + cell * columnLabels.length + 20,
    height = top + cell * rowLabels.length + 60;
  const color = (v: number) => `hsl(${Math.round(120 * v)}, 65%, ${Math.round(85 - 35 * v)}%)`; // red (0) to green (1)
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`,
    `<text x="${left + (cell * columnLabels.length) / 2}" y="${height - 14}" text-anchor="middle">${escape(columnTitle)}</text>`,
    `<text transform="translate(16 ${top + (cell * rowLabels.length) / 2}) rotate(-90)" text-anchor="middle">${escape(rowTitle)}</text>`,
  ];
  rowLabels.forEach((r, i) => {
    parts.push(`<text x="${left - 8}" y="${top + i * cell + cell / 2 + 4}" text-anchor="end">${escape(r)}</text>`);
    columnLabels.forEach((_, j) => {
      const v = values[i][j];
      parts.push(
        `<rect x="${left + j * cell}" y="${top + i * cell}" width="${cell - 2}" height="${cell - 2}" fill="${Number.isFinite(v) ? color(v) : "#eee"}"/>`,
      );
      parts.push(
        `<text x="${left + j * cell + cell / 2 - 1}" y="${top + i * cell + cell / 2 + 4}" text-anchor="middle">${Number.isFinite(v) ? v.toFixed(2) : "-"}</text>`,
      );
    });
  });
  columnLabels.forEach((c, j) =>
    parts.push(
      `<text x="${left + j * cell + cell / 2}" y="${top + cell * rowLabels.length + 18}" text-anchor="middle">${escape(c)}</text>`,
    ),
  );
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
