// Charts drawn as inline SVG (no library): a line chart for trends and horizontal bars for per-agent
// and per-group figures. Each chart carries a text alternative (a <table> for screen readers).
import { h } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function srTable(caption, headers, rows) {
  // The wrapper hides it: a table ignores the height and overflow that hide a block.
  return h("div", { class: "sr-only" }, h("table", {}, h("caption", {}, caption), h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))), h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, String(c))))))));
}

// points: [{label, value}], one series; `format` renders a value.
export function lineChart(title, points, { format = String, height = 240 } = {}) {
  const width = 420;
  const pad = { top: 16, right: 16, bottom: 36, left: 62 };
  const max = niceMax(Math.max(0, ...points.map((p) => Number(p.value) || 0)));
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const x = (i) => pad.left + (points.length <= 1 ? innerW / 2 : (i * innerW) / (points.length - 1));
  const y = (v) => pad.top + innerH - (v / max) * innerH;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => t * max);
  const every = Math.max(1, Math.ceil(points.length / 5));
  const svg = s(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title, preserveAspectRatio: "xMidYMid meet" },
    ticks.map((t) => [
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: pad.left - 6, y: y(t) + 4, class: "axis", "text-anchor": "end" }, format(t)),
    ]),
    points.length
      ? [
          s("polyline", { points: points.map((p, i) => `${x(i)},${y(Number(p.value) || 0)}`).join(" "), class: "line" }),
          points.map((p, i) => s("circle", { cx: x(i), cy: y(Number(p.value) || 0), r: 3, class: "dot" }, s("title", {}, `${p.label}: ${format(p.value)}`))),
          points.map((p, i) =>
            i % every === 0 || i === points.length - 1
              ? s("text", { x: x(i), y: height - 12, class: "axis", "text-anchor": i === points.length - 1 && points.length > 1 ? "end" : "middle" }, p.label)
              : null,
          ),
        ]
      : s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "No data in this range"),
  );
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, srTable(title, ["", "value"], points.map((p) => [p.label, format(p.value)])));
}

// bars: [{label, value}], horizontal.
export function barChart(title, bars, { format = String } = {}) {
  const width = 520;
  const row = 32;
  const labelW = 150;
  const height = Math.max(60, bars.length * row + 24);
  const max = niceMax(Math.max(0, ...bars.map((b) => Number(b.value) || 0)));
  const innerW = width - labelW - 80;
  const svg = s(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title },
    bars.length
      ? bars.map((b, i) => {
          const w = ((Number(b.value) || 0) / max) * innerW;
          const top = 12 + i * row;
          return [
            s("text", { x: labelW - 8, y: top + 17, class: "axis", "text-anchor": "end" }, b.label.length > 18 ? `${b.label.slice(0, 17)}…` : b.label),
            s("rect", { x: labelW, y: top, width: Math.max(w, 1), height: row - 8, rx: 3, class: "bar" }, s("title", {}, `${b.label}: ${format(b.value)}`)),
            s("text", { x: labelW + w + 6, y: top + 17, class: "value" }, format(b.value)),
          ];
        })
      : s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "No data"),
  );
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, srTable(title, ["", "value"], bars.map((b) => [b.label, format(b.value)])));
}
