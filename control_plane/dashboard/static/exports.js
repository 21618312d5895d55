// Export buttons for call records and CDRs (SPEC §2.7, §2.9), written against the contract while the
// exports API is built in another branch. Streaming: GET /api/exports/{kind}?format=…&<filters>
// (fetched with the token, saved as a file). Background: POST /api/exports {type, format, fields,
// filters} → {id}; GET /api/exports/{id}/status until done; GET /api/exports/{id}/download.
import { api, ApiError } from "./api.js";
import { canWrite, errorBox, h, nextId, toast } from "./ui.js";

export const FORMATS = ["csv", "json", "ndjson"];
// The `type` the background-export body names for each kind (the path segment of the streaming one).
export const EXPORT_TYPES = { "call-records": "call-records", cdr: "cdr" };
const POLL_MS = 1000;
const POLL_LIMIT = 600;
const DONE = new Set(["done", "completed", "complete", "ready", "finished", "succeeded"]);
const FAILED = new Set(["failed", "error", "errored", "canceled", "cancelled", "expired"]);

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
  return Object.fromEntries(Object.entries(filters || {}).filter(([k, v]) => v !== "" && v !== null && v !== undefined && k !== "page" && k !== "per_page"));
}

// `currentFilters()` returns the list page's filters (the same query parameters the list takes).
export function exportControls(kind, currentFilters) {
  const status = h("div", { class: "export-status", "aria-live": "polite" });
  const anonId = nextId("anon");
  const anonymize = h("input", { type: "checkbox", id: anonId });
  const formatId = nextId("fmt");
  const format = h("select", { id: formatId }, FORMATS.map((f) => h("option", { value: f }, f.toUpperCase())));

  async function stream() {
    status.replaceChildren(h("span", { class: "muted" }, "Preparing the download…"));
    try {
      const params = { ...clean(currentFilters()), format: format.value, ...(anonymize.checked ? { anonymize: "true" } : {}) };
      const response = await api.raw("GET", `/api/exports/${kind}`, { params });
      await save(response, `${kind}.${format.value}`);
      status.replaceChildren(h("span", { class: "muted" }, "Downloaded."));
    } catch (err) {
      status.replaceChildren(errorBox(explain(err)));
    }
  }

  async function background() {
    status.replaceChildren(h("span", { class: "muted" }, "Starting a background export…"));
    try {
      const job = await api.post("/api/exports", {
        type: EXPORT_TYPES[kind],
        format: format.value,
        filters: { ...clean(currentFilters()), ...(anonymize.checked ? { anonymize: true } : {}) },
      });
      for (let i = 0; i < POLL_LIMIT; i += 1) {
        const state = await api.get(`/api/exports/${job.id}/status`);
        const word = String(state.status || state.state || "").toLowerCase();
        if (DONE.has(word)) {
          const response = await api.raw("GET", `/api/exports/${job.id}/download`);
          await save(response, `${kind}-${job.id}.${format.value}`);
          status.replaceChildren(h("span", { class: "muted" }, `Export ${job.id} downloaded${state.rows !== undefined ? ` (${state.rows} rows)` : ""}.`));
          toast("Background export ready.");
          return;
        }
        if (FAILED.has(word)) throw new Error(state.error || state.detail || `Export ${word}.`);
        status.replaceChildren(h("span", { class: "muted" }, `Export ${job.id}: ${word || "running"}${state.rows !== undefined ? `, ${state.rows} rows so far` : ""}…`));
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
      throw new Error("The export is taking long; try again later.");
    } catch (err) {
      status.replaceChildren(errorBox(explain(err)));
    }
  }

  return h(
    "div",
    { class: "export-bar", role: "group", "aria-label": "Export" },
    h("label", { for: formatId }, "Export as"),
    format,
    h("span", { class: "check inline-check" }, anonymize, h("label", { for: anonId }, "Mask phone numbers")),
    h("button", { type: "button", class: "btn", onclick: stream, "data-export": "stream" }, "Download"),
    // A POST: the API's role rule leaves it to admins unless its route says otherwise.
    canWrite() ? h("button", { type: "button", class: "btn", onclick: background, "data-export": "background", title: "For very large sets: built on the server, then downloaded" }, "Background export") : null,
    status,
  );
}

function explain(err) {
  if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
    return new Error("Exports are not available on this server yet.");
  }
  return err;
}
