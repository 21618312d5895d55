// Export buttons for call records and CDRs (docs/architecture.md "Exports"). Streaming:
// GET /api/exports/{call-records|cdr}?format=…&anonymize=…&<the list's filters>, fetched with the token
// and saved as a file. Background: POST /api/exports {type, format, filters, anonymize} → the job;
// GET /api/exports/{id}/status until done (queued | running | done | failed | expired); then
// GET /api/exports/{id}/download, a gzip file (410 once expired). Viewers may do both, as the API says.
import { ApiError, api, cached } from "./api.js";
import { errorBox, h, nextId, toast } from "./ui.js";

export const FORMATS = ["csv", "json", "ndjson"];
// The `type` the background-export body names for each kind (the path segment of the streaming one).
export const EXPORT_TYPES = { "call-records": "call_records", cdr: "cdr" };
const POLL_MS = 500;
const POLL_LIMIT = 1200; // 10 minutes

function filename(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(header);
  return m ? decodeURIComponent(m[1]) : fallback;
}

async function save(response, fallback) {
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename(response, fallback), hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function clean(filters) {
  return Object.fromEntries(Object.entries(filters || {}).filter(([, v]) => v !== "" && v !== null && v !== undefined));
}

// The filters a background export of `type` takes (GET /api/exports/fields): the list's others
// (sort, page) are not filters and the API refuses unknown ones.
async function allowedFilters(type) {
  const answer = await cached("/api/exports/fields");
  return new Set(answer.data.find((t) => t.type === type)?.filters || []);
}

// `currentFilters()` returns the list page's filters (the same query parameters the list takes).
export function exportControls(kind, currentFilters) {
  const status = h("div", { class: "export-status", "aria-live": "polite" });
  const anonId = nextId("anon");
  const anonymize = h("input", { type: "checkbox", id: anonId });
  const formatId = nextId("fmt");
  const format = h("select", { id: formatId }, FORMATS.map((f) => h("option", { value: f }, f.toUpperCase())));
  const say = (text) => status.replaceChildren(h("span", { class: "muted" }, text));

  async function stream() {
    say("Preparing the download…");
    try {
      const { page, per_page, ...filters } = clean(currentFilters());
      const params = { ...filters, format: format.value, ...(anonymize.checked ? { anonymize: "true" } : {}) };
      const response = await api.raw("GET", `/api/exports/${kind}`, { params });
      await save(response, `${kind}.${format.value}`);
      say("Downloaded.");
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  }

  async function background() {
    say("Starting a background export…");
    try {
      const type = EXPORT_TYPES[kind];
      const allowed = await allowedFilters(type);
      const filters = Object.fromEntries(Object.entries(clean(currentFilters())).filter(([k]) => allowed.has(k)));
      let job = await api.post("/api/exports", { type, format: format.value, filters, anonymize: anonymize.checked });
      for (let i = 0; job.status === "queued" || job.status === "running"; i += 1) {
        if (i >= POLL_LIMIT) throw new Error(`Export ${job.id} is taking long; its status is at /api/exports/${job.id}/status.`);
        say(`Export ${job.id}: ${job.status}${job.rows !== null && job.rows !== undefined ? `, ${job.rows} rows so far` : ""}…`);
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        job = await api.get(`/api/exports/${job.id}/status`);
      }
      if (job.status === "failed") throw new Error(`Export ${job.id} failed${job.error ? `: ${job.error}` : "."}`);
      if (job.status === "expired") throw new Error(`Export ${job.id} has expired; start it again.`);
      const response = await api.raw("GET", `/api/exports/${job.id}/download`);
      await save(response, job.filename);
      status.replaceChildren(h("span", { class: "muted", "data-export-job": job.id }, `Export ${job.id} downloaded: ${job.rows} ${job.rows === 1 ? "row" : "rows"}, gzip-compressed (${job.filename}).`));
      toast("Background export ready.");
    } catch (err) {
      const gone = err instanceof ApiError && err.status === 410;
      status.replaceChildren(errorBox(gone ? new Error(`${err.message} Start the export again.`) : err));
    }
  }

  return h(
    "div",
    { class: "export-bar", role: "group", "aria-label": "Export" },
    h("label", { for: formatId }, "Export as"),
    format,
    h("span", { class: "check inline-check" }, anonymize, h("label", { for: anonId }, "Mask phone numbers")),
    h("button", { type: "button", class: "btn", onclick: stream, "data-export": "stream" }, "Download"),
    h("button", { type: "button", class: "btn", onclick: background, "data-export": "background", title: "For very large sets: built on the server, then downloaded (gzip)" }, "Background export"),
    status,
  );
}
