// Small SVG charts drawn by the dashboard itself: lines over time, the traffic split, the
// agreement interval, the difference distribution, and a tensor drawn as an image.
import { el, svg, clock, replace } from "./common.js";

// Dark enough for 3:1 against white (WCAG's non-text contrast); dashes tell them apart too.
export const COLOURS = ["#1f5fbf", "#b3400b", "#15803d", "#7e22ce", "#8a5a00", "#0f766e"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "4 4", "1 2"];
const W = 480;
const H = 200;
const M = { top: 10, right: 12, bottom: 28, left: 52 };

export function styleOf(index) {
  return { colour: COLOURS[index % COLOURS.length], dash: DASHES[index % DASHES.length] };
}

function ticks(low, high, count) {
  if (high <= low) return [low];
  const raw = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function swatch(style) {
  return svg(
    "svg",
    { width: 28, height: 10, viewBox: "0 0 28 10", "aria-hidden": "true", class: "swatch" },
    svg("line", { x1: 1, y1: 5, x2: 27, y2: 5, stroke: style.colour, "stroke-width": 3, "stroke-dasharray": style.dash }),
  );
}

// series: [{name, points: [[epochS, value|null], ...], style?}]; format(v) for the axis and
// the summary; yMin/yMax pin the scale (yMax grows to fit the data).
export function lineChart(container, { label, series, format = String, yMin = 0, yMax = null }) {
  const all = series.flatMap((s) => s.points);
  const values = all.map(([, v]) => v).filter((v) => v !== null && Number.isFinite(v));
  const times = all.map(([t]) => t);
  const count = Math.max(0, ...series.map((s) => s.points.length));
  if (!values.length || times.length < 1) {
    replace(container, el("p", { class: "muted empty", "data-points": count }, "No data yet."));
    return;
  }
  const t0 = Math.min(...times);
  const t1 = Math.max(t0 + 1, ...times);
  let lo = Math.min(yMin ?? Math.min(...values), ...values);
  let hi = Math.max(yMax ?? -Infinity, ...values);
  if (hi <= lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1);
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - ((v - lo) / (hi - lo)) * (H - M.top - M.bottom);
  const grid = ticks(lo, hi, 4).map((v) =>
    svg("g", {}, svg("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, format(v))));
  const xTicks = [t0, (t0 + t1) / 2, t1].map((t, i) =>
    svg("text", { x: x(t), y: H - 8, "text-anchor": ["start", "middle", "end"][i], class: "axis" }, clock(t)));
  const lines = series.map((s, i) => {
    const style = s.style || styleOf(i);
    const segments = [];
    let current = [];
    for (const [t, v] of s.points) {
      if (v === null || !Number.isFinite(v)) {
        if (current.length) segments.push(current);
        current = [];
      } else current.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    if (current.length) segments.push(current);
    return svg("g", { class: "series", "data-series": s.name },
      segments.map((pts) => pts.length === 1
        ? svg("circle", { cx: pts[0].split(",")[0], cy: pts[0].split(",")[1], r: 2.5, fill: style.colour })
        : svg("polyline", { points: pts.join(" "), fill: "none", stroke: style.colour, "stroke-width": 2, "stroke-dasharray": style.dash })));
  });
  const latest = series.map((s) => {
    const last = [...s.points].reverse().find(([, v]) => v !== null && Number.isFinite(v));
    return `${s.name} ${last ? format(last[1]) : "n/a"}`;
  });
  const summary = `${label}, ${count} points from ${clock(t0)} to ${clock(t1)}; latest: ${latest.join(", ")}`;
  replace(
    container,
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, "data-points": count, class: "plot-svg" },
      svg("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom, class: "frame" }),
      grid, xTicks, lines),
    el("ul", { class: "legend" }, series.map((s, i) => el("li", {}, swatch(s.style || styleOf(i)), s.name))),
  );
}

// The split of traffic outside the cohorts: {variant: percent}; names maps variant -> label.
export function splitBar(split, names, order) {
  const entries = Object.entries(split || {}).sort(([a], [b]) => order.indexOf(a) - order.indexOf(b));
  const text = entries.map(([variant, share]) => `${names[variant] || variant}: ${share} %`).join(", ");
  const bar = el("div", { class: "split-bar", role: "img", "aria-label": `Traffic split: ${text}` });
  entries.forEach(([variant, share]) => {
    const segment = el("span", { class: "segment", "data-variant": variant, "data-share": share });
    segment.style.width = `${share}%`;
    segment.style.background = styleOf(Math.max(0, order.indexOf(variant))).colour;
    bar.append(segment);
  });
  const legend = el("ul", { class: "legend split-legend" }, entries.map(([variant, share]) => {
    const dot = el("span", { class: "dot", "aria-hidden": "true" });
    dot.style.background = styleOf(Math.max(0, order.indexOf(variant))).colour;
    return el("li", { "data-variant": variant }, dot, `${names[variant] || variant} ${share} %`);
  }));
  return el("div", { class: "split" }, bar, legend);
}

// An agreement rate with its interval on a 0..1 scale.
export function intervalBar(rate, low, high, label) {
  const w = 300;
  const x = (v) => 10 + v * (w - 20);
  return svg("svg", { viewBox: `0 0 ${w} 34`, role: "img", "aria-label": label, class: "interval" },
    svg("line", { x1: x(0), x2: x(1), y1: 12, y2: 12, class: "track" }),
    svg("rect", { x: x(low), y: 6, width: Math.max(2, x(high) - x(low)), height: 12, class: "band" }),
    svg("circle", { cx: x(rate), cy: 12, r: 5, class: "point" }),
    [0, 0.5, 1].map((v, i) => svg("text", { x: x(v), y: 32, "text-anchor": ["start", "middle", "end"][i], class: "axis" }, `${v * 100} %`)));
}

// Quantiles of the largest absolute difference between the two outputs, on 0..1.
export function quantileStrip(spread, label) {
  const w = 300;
  const x = (v) => 10 + Math.min(1, Math.max(0, v)) * (w - 20);
  const marks = [["p50", spread.p50], ["p90", spread.p90], ["p99", spread.p99], ["max", spread.max]];
  // Labels at least 30 px apart, kept inside the strip: close quantiles would overlap.
  const at = marks.map(([, v]) => x(v));
  for (let i = 1; i < at.length; i++) at[i] = Math.max(at[i], at[i - 1] + 30);
  at[at.length - 1] = Math.min(at[at.length - 1], w - 14);
  for (let i = at.length - 2; i >= 0; i--) at[i] = Math.min(at[i], at[i + 1] - 30);
  return svg("svg", { viewBox: `0 0 ${w} 58`, role: "img", "aria-label": label, class: "interval" },
    svg("line", { x1: x(0), x2: x(1), y1: 14, y2: 14, class: "track" }),
    svg("rect", { x: x(spread.p50), y: 8, width: Math.max(2, x(spread.p99) - x(spread.p50)), height: 12, class: "band" }),
    marks.map(([name, v], i) => svg("g", {},
      svg("line", { x1: x(v), x2: x(v), y1: 4, y2: 24, class: "tick" }),
      svg("line", { x1: x(v), x2: at[i], y1: 24, y2: 32, class: "track" }),
      svg("text", { x: at[i], y: 42, "text-anchor": "middle", class: "axis" }, name))),
    [0, 1].map((v, i) => svg("text", { x: x(v), y: 56, "text-anchor": i ? "end" : "start", class: "axis" }, String(v))));
}

// A tensor whose last dimension is a square (the digits' 64 pixels) as a grey-level image.
export function tensorImage(values, label) {
  const side = Math.round(Math.sqrt(values.length));
  if (!side || side * side !== values.length) return null;
  const top = Math.max(...values.map(Number), 1e-9);
  const cell = 12;
  return svg("svg", { viewBox: `0 0 ${side * cell} ${side * cell}`, role: "img", "aria-label": label, class: "digit", "data-side": side },
    values.map((v, i) => {
      const level = Math.round(255 - (255 * Math.max(0, Number(v))) / top);
      return svg("rect", { x: (i % side) * cell, y: Math.floor(i / side) * cell, width: cell, height: cell, fill: `rgb(${level},${level},${level})` });
    }));
}

// Per class: the two sides' values as paired bars.
export function pairedBars(labels, left, right, names, label) {
  const rowH = 16;
  const w = 300;
  const h = labels.length * rowH + 18;
  const x = (v) => 40 + Math.max(0, Math.min(1, v)) * (w - 50);
  return svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label, class: "paired" },
    labels.map((name, i) => svg("g", {},
      svg("text", { x: 34, y: i * rowH + 12, "text-anchor": "end", class: "axis" }, name),
      svg("rect", { x: 40, y: i * rowH + 2, width: x(left[i] ?? 0) - 40, height: 6, fill: COLOURS[0] }),
      svg("rect", { x: 40, y: i * rowH + 8, width: x(right[i] ?? 0) - 40, height: 6, fill: COLOURS[1] }))),
    svg("text", { x: 40, y: h - 4, class: "axis" }, `top bar: ${names[0]}, lower bar: ${names[1]}`));
}
