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

// The top of a count's scale: four whole steps (4, 8, 20, 40, 80, 200, …), so every tick is a whole number.
function wholeMax(value) {
  const step = Math.max(1, value / 4);
  const power = 10 ** Math.floor(Math.log10(step));
  for (const nice of [1, 2, 5, 10]) if (step <= nice * power) return 4 * Math.max(1, nice * power);
  return 40 * power;
}

function srTable(caption, headers, rows) {
  // The wrapper hides it: a table ignores the height and overflow that hide a block.
  return h("div", { class: "sr-only" }, h("table", {}, h("caption", {}, caption), h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))), h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, String(c))))))));
}

// points: [{label, value}], one series; `format` renders a value.
// `compare`: an optional second series {name, points} on the same labels (drawn dashed), with a legend.
// `whole`: counts (whole-number ticks); `floor`: the least top of the scale (60 for seconds); `max`: a
// fixed top (1 for rates).
export function lineChart(title, points, { format = String, height = 230, name = "value", compare = null, whole = false, floor = 0, max: fixedMax = null } = {}) {
  const width = 380;
  const pad = { top: 16, right: 20, bottom: 36, left: 66 };
  const others = compare ? compare.points : [];
  const top = Math.max(floor, ...points.map((p) => Number(p.value) || 0), ...others.map((p) => Number(p.value) || 0));
  const max = fixedMax ?? (whole ? wholeMax(top) : niceMax(top));
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const x = (i) => pad.left + (points.length <= 1 ? innerW / 2 : (i * innerW) / (points.length - 1));
  const y = (v) => pad.top + innerH - (v / max) * innerH;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => t * max);
  // At most five short labels or three long ones ("11-29 14:00") under the axis.
  const longest = Math.max(0, ...points.map((p) => String(p.label).length));
  const every = Math.max(1, Math.ceil(points.length / (longest > 6 ? 3 : 5)));
  const svg = s(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title, preserveAspectRatio: "xMidYMid meet" },
    ticks.map((t) => [
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: pad.left - 6, y: y(t) + 4, class: "axis", "text-anchor": "end" }, format(t)),
    ]),
    points.length
      ? [
          compare ? s("polyline", { points: others.map((p, i) => `${x(i)},${y(Number(p.value) || 0)}`).join(" "), class: "line second" }) : null,
          s("polyline", { points: points.map((p, i) => `${x(i)},${y(Number(p.value) || 0)}`).join(" "), class: "line" }),
          // A dot per point while they stand apart (an hourly month is a line; the table has its figures).
          points.length <= 60 ? points.map((p, i) => s("circle", { cx: x(i), cy: y(Number(p.value) || 0), r: 3, class: "dot" }, s("title", {}, `${p.label}: ${format(p.value)}`))) : null,
          points.map((p, i) =>
            // every `every`-th label, and the last one, unless it would overlap its neighbour
            (i % every === 0 && (i === points.length - 1 || points.length - 1 - i >= every)) || i === points.length - 1
              ? s("text", { x: x(i), y: height - 12, class: "axis", "text-anchor": i === points.length - 1 && points.length > 1 ? "end" : "middle" }, p.label)
              : null,
          ),
        ]
      : s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "No data in this range"),
  );
  const legend = compare
    ? h("div", { class: "legend", "aria-hidden": "true" }, h("span", { class: "key first" }, name), h("span", { class: "key second" }, compare.name))
    : null;
  const headers = compare ? ["", name, compare.name] : ["", "value"];
  const rows = points.map((p, i) => (compare ? [p.label, format(p.value), format(others[i]?.value ?? 0)] : [p.label, format(p.value)]));
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), legend, svg, srTable(title, headers, rows));
}

// Use against capacity: rows [{label, active, capacity}] (capacity null = unlimited). Each row is a
// track for the capacity with the active calls filled in, and "active / capacity" written after it.
export function capacityChart(title, rows) {
  const width = 380;
  const row = 32;
  const labelW = 120;
  const innerW = width - labelW - 96;
  const height = Math.max(60, rows.length * row + 24);
  const unlimitedMax = niceMax(Math.max(1, ...rows.map((r) => (r.capacity ? 0 : Number(r.active) || 0))));
  const svg = s(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title },
    rows.length
      ? rows.map((r, i) => {
          const top = 12 + i * row;
          const scale = r.capacity ? r.capacity : unlimitedMax;
          const fill = Math.min(1, (Number(r.active) || 0) / scale) * innerW;
          const full = r.capacity && r.active >= r.capacity;
          const text = r.capacity ? `${r.active} / ${r.capacity}` : `${r.active} / ∞`;
          return [
            s("text", { x: labelW - 8, y: top + 17, class: "axis", "text-anchor": "end" }, r.label.length > 14 ? `${r.label.slice(0, 13)}…` : r.label),
            s("rect", { x: labelW, y: top, width: innerW, height: row - 8, rx: 3, class: r.capacity ? "track" : "track unlimited" }),
            s("rect", { x: labelW, y: top, width: Math.max(fill, r.active ? 2 : 0), height: row - 8, rx: 3, class: full ? "bar full" : "bar" }, s("title", {}, `${r.label}: ${text}`)),
            s("text", { x: labelW + innerW + 6, y: top + 17, class: "value" }, text),
          ];
        })
      : s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "No agents or groups"),
  );
  const table = srTable(title, ["", "active calls", "capacity"], rows.map((r) => [r.label, r.active, r.capacity ?? "unlimited"]));
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, table);
}

// bars: [{label, value}], horizontal.
export function barChart(title, bars, { format = String, whole = false, floor = 0, max: fixedMax = null } = {}) {
  const width = 380;
  const row = 32;
  const labelW = 120;
  const height = Math.max(60, bars.length * row + 24);
  const top = Math.max(floor, ...bars.map((b) => Number(b.value) || 0));
  const max = fixedMax ?? (whole ? wholeMax(top) : niceMax(top));
  const innerW = width - labelW - 74;
  const svg = s(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title },
    bars.length
      ? bars.map((b, i) => {
          const w = ((Number(b.value) || 0) / max) * innerW;
          const top = 12 + i * row;
          return [
            s("text", { x: labelW - 8, y: top + 17, class: "axis", "text-anchor": "end" }, b.label.length > 14 ? `${b.label.slice(0, 13)}…` : b.label),
            s("rect", { x: labelW, y: top, width: Math.max(w, 1), height: row - 8, rx: 3, class: "bar" }, s("title", {}, `${b.label}: ${format(b.value)}`)),
            s("text", { x: labelW + w + 6, y: top + 17, class: "value" }, format(b.value)),
          ];
        })
      : s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "No data"),
  );
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, srTable(title, ["", "value"], bars.map((b) => [b.label, format(b.value)])));
}
