// Small charts drawn as inline SVG: no library, no build step. Colours come from CSS classes
// (series-0 … series-5, and the theme's variables), so both themes work and the CSP holds.
// Each chart is an <svg role="img"> with an accessible summary; marks carry <title> tooltips.

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function label(x, y, content, cls = "chart-label", anchor = "start") {
  return el("text", { x, y, class: cls, "text-anchor": anchor, "dominant-baseline": "middle" }, content);
}

function titled(node, tip) {
  node.append(el("title", {}, tip));
  return node;
}

function frame(width, height, summary, ...children) {
  return el(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": summary, class: "chart" },
    el("title", {}, summary),
    ...children,
  );
}

// 0 … max in 3–5 round steps (1, 2, 2.5 or 5 × 10^n).
export function ticks(max, target = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / target;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const top = Math.ceil(max / step - 1e-9) * step;
  const values = [];
  for (let v = 0; v <= top + step / 2; v += step) values.push(Number(v.toPrecision(12)));
  return values;
}

export function compact(value) {
  if (!Number.isFinite(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(abs >= 1e10 ? 0 : 1)}B`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(abs >= 1e7 ? 0 : 1)}M`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(abs >= 1e4 ? 0 : 1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(abs < 1 ? 2 : 1);
}

function labelWidth(width) {
  return Math.round(Math.min(170, Math.max(92, width * 0.24)));
}

// Rates with their intervals, one row per series: a whisker from low to high, a dot at the rate,
// and a dashed line at the reference (the control's rate). Narrow: labels above their whiskers.
// rows: [{label, note, value, low, high, series, strong}]
export function intervalChart({ rows, width, domain = [0, 1], reference = null, format, summary }) {
  const narrow = width < 520;
  const left = narrow ? 8 : labelWidth(width);
  const right = 16;
  const top = 26;
  const rowHeight = narrow ? 64 : 50;
  const height = top + rows.length * rowHeight + 8;
  const plot = width - left - right;
  const [d0, d1] = domain;
  const x = (v) => left + ((Math.min(d1, Math.max(d0, v)) - d0) / (d1 - d0)) * plot;
  const grid = [];
  for (let i = 0; i <= 4; i += 1) {
    const v = d0 + ((d1 - d0) * i) / 4;
    grid.push(el("line", { x1: x(v), x2: x(v), y1: top - 6, y2: height - 6, class: "chart-grid" }));
    grid.push(label(x(v), 10, format(v), "chart-axis", i === 0 ? "start" : i === 4 ? "end" : "middle"));
  }
  const marks = rows.map((row, i) => {
    const y = narrow ? top + i * rowHeight + 44 : top + i * rowHeight + rowHeight / 2 - 4;
    const parts = narrow
      ? [el("text", { x: 0, y: y - 30, class: row.strong ? "chart-label strong" : "chart-label", "dominant-baseline": "middle" },
          row.label, el("tspan", { class: "chart-note", dx: 8 }, row.note ?? ""))]
      : [
          label(0, y - 8, row.label, row.strong ? "chart-label strong" : "chart-label"),
          label(0, y + 11, row.note ?? "", "chart-note"),
        ];
    if (Number.isFinite(row.value)) {
      const low = x(row.low ?? row.value);
      const high = x(row.high ?? row.value);
      const tip = `${row.label}: ${format(row.value)} (95% interval ${format(row.low)}–${format(row.high)})`;
      parts.push(
        titled(el("g", { class: `series-${row.series ?? 0}` },
          el("rect", { x: low, y: y - 7, width: Math.max(2, high - low), height: 14, rx: 7, class: "band" }),
          el("line", { x1: low, x2: high, y1: y, y2: y, class: "whisker" }),
          el("line", { x1: low, x2: low, y1: y - 6, y2: y + 6, class: "whisker" }),
          el("line", { x1: high, x2: high, y1: y - 6, y2: y + 6, class: "whisker" }),
          el("circle", { cx: x(row.value), cy: y, r: 6, class: "dot" }),
        ), tip),
        label(Math.min(x(row.value), width - right - 14), y - 16, format(row.value), "chart-value", "middle"),
      );
    } else {
      parts.push(label(left + 4, y, "no ratings yet", "chart-note"));
    }
    return el("g", { class: "chart-row" }, parts);
  });
  const ref = Number.isFinite(reference)
    ? [el("line", { x1: x(reference), x2: x(reference), y1: top - 4, y2: height - 6, class: "chart-reference" })]
    : [];
  return frame(width, height, summary, grid, ref, marks);
}

// Horizontal bars, one group per row, several measures per group (e.g. mean and p95).
// rows: [{label, note, series, bars: [{value, kind, tip}]}], kinds style the bars (solid / soft).
export function barChart({ rows, width, format, summary, legend = [] }) {
  const left = labelWidth(width);
  const right = 64;
  const top = legend.length ? 26 : 8;
  const bar = 12;
  const values = rows.flatMap((r) => r.bars.map((b) => b.value)).filter(Number.isFinite);
  const scale = ticks(Math.max(0, ...values));
  const max = scale[scale.length - 1] || 1;
  const rowHeight = Math.max(40, rows.reduce((n, r) => Math.max(n, r.bars.length), 1) * (bar + 5) + 14);
  const height = top + rows.length * rowHeight + 18;
  const plot = width - left - right;
  const x = (v) => left + (v / max) * plot;
  const parts = [];
  for (const t of scale) {
    parts.push(el("line", { x1: x(t), x2: x(t), y1: top, y2: height - 18, class: "chart-grid" }));
    parts.push(label(x(t), height - 7, format(t), "chart-axis", t === 0 ? "start" : "middle"));
  }
  legend.forEach((item, i) => {
    const lx = left + i * 96;
    parts.push(el("rect", { x: lx, y: 4, width: 12, height: 12, rx: 3, class: `legend ${item.kind}` }));
    parts.push(label(lx + 18, 10, item.label, "chart-note"));
  });
  rows.forEach((row, i) => {
    const y0 = top + i * rowHeight + 7;
    parts.push(label(0, y0 + 8, row.label, "chart-label"));
    if (row.note) parts.push(label(0, y0 + 26, row.note, "chart-note"));
    row.bars.forEach((b, j) => {
      const y = y0 + j * (bar + 5);
      if (!Number.isFinite(b.value)) {
        parts.push(label(left + 4, y + bar / 2, "–", "chart-note"));
        return;
      }
      parts.push(titled(el("rect", {
        x: left, y, width: Math.max(1.5, x(b.value) - left), height: bar, rx: 3,
        class: `bar ${b.kind ?? "solid"} series-${row.series ?? 0}`,
      }), b.tip ?? `${row.label}: ${format(b.value)}`));
      parts.push(label(x(b.value) + 6, y + bar / 2, format(b.value), "chart-value"));
    });
  });
  return frame(width, height, summary, parts);
}

// Shares as 100% bars side by side (e.g. observed split against the planned one).
// bars: [{label, parts: [{name, value, series}]}]
export function splitChart({ bars, width, summary }) {
  const left = labelWidth(width);
  const right = 8;
  const barHeight = 26;
  const gap = 14;
  const height = bars.length * (barHeight + gap) + 4;
  const plot = width - left - right;
  const parts = [];
  bars.forEach((b, i) => {
    const y = i * (barHeight + gap) + 2;
    const total = b.parts.reduce((n, p) => n + (p.value || 0), 0);
    parts.push(label(0, y + barHeight / 2, b.label, "chart-label"));
    if (!total) {
      parts.push(el("rect", { x: left, y, width: plot, height: barHeight, rx: 6, class: "chart-empty" }));
      parts.push(label(left + 8, y + barHeight / 2, "no users yet", "chart-note"));
      return;
    }
    let at = left;
    for (const p of b.parts) {
      const w = (p.value / total) * plot;
      if (w <= 0) continue;
      const share = `${Math.round((p.value / total) * 100)}%`;
      parts.push(titled(el("rect", {
        x: at, y, width: Math.max(0, w - 2), height: barHeight, rx: 5, class: `bar solid series-${p.series}`,
      }), `${b.label} — ${p.name}: ${share}${p.count === undefined ? "" : ` (${p.count})`}`));
      if (w > 56) parts.push(label(at + 8, y + barHeight / 2, `${p.name} ${share}`, "chart-inbar"));
      at += w;
    }
  });
  return frame(width, height, summary, parts);
}

// Columns over time, stacked by series. points: [{label, stacks: [{value, series, name}]}]
export function columnChart({ points, width, format, summary, legend = [] }) {
  const left = 44;
  const right = 6;
  const top = legend.length ? 26 : 8;
  const bottom = 22;
  const height = 200;
  const totals = points.map((p) => p.stacks.reduce((n, s) => n + (s.value || 0), 0));
  const scale = ticks(Math.max(0, ...totals));
  const max = scale[scale.length - 1] || 1;
  const plotH = height - top - bottom;
  const plotW = width - left - right;
  const slot = plotW / Math.max(1, points.length);
  const barW = Math.max(3, Math.min(34, slot * 0.7));
  const y = (v) => top + plotH - (v / max) * plotH;
  const parts = [];
  for (const t of scale) {
    parts.push(el("line", { x1: left, x2: width - right, y1: y(t), y2: y(t), class: "chart-grid" }));
    parts.push(label(left - 6, y(t), format(t), "chart-axis", "end"));
  }
  legend.forEach((item, i) => {
    const lx = left + i * 110;
    parts.push(el("rect", { x: lx, y: 4, width: 12, height: 12, rx: 3, class: `legend solid series-${item.series}` }));
    parts.push(label(lx + 18, 10, item.label, "chart-note"));
  });
  const every = Math.max(1, Math.ceil(points.length / Math.max(1, Math.floor(plotW / 64))));
  points.forEach((p, i) => {
    const cx = left + slot * i + slot / 2;
    let base = 0;
    for (const s of p.stacks) {
      if (!(s.value > 0)) continue;
      parts.push(titled(el("rect", {
        x: cx - barW / 2, y: y(base + s.value), width: barW, height: Math.max(1, y(base) - y(base + s.value)),
        rx: 2, class: `bar solid series-${s.series}`,
      }), `${p.label} — ${s.name}: ${format(s.value)}`));
      base += s.value;
    }
    if (i % every === 0) parts.push(label(cx, height - 8, p.label, "chart-axis", "middle"));
  });
  return frame(width, height, summary, parts);
}
