// The public API, and nothing else: every call carries the user's bearer token; errors arrive as
// RFC 9457 problem+json and become an ApiError with the per-field messages of `errors[]`.
import { session } from "./session.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    // [{field, message}] — a field is a dotted path such as "settings.window_hours".
    this.fieldErrors = Array.isArray(problem?.errors) ? problem.errors : [];
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export async function request(method, path, { body, params, raw = false, auth = true } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const token = session.token();
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path + query(params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { detail: `The server cannot be reached (${err.message}).` });
  }
  if (response.status === 401 && auth && token) {
    session.expired();
  }
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      problem = { detail: `${response.status} ${response.statusText}` };
    }
    throw new ApiError(response.status, problem);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const api = {
  get: (path, params) => request("GET", path, { params }),
  post: (path, body, params) => request("POST", path, { body, params }),
  put: (path, body) => request("PUT", path, { body }),
  patch: (path, body) => request("PATCH", path, { body }),
  del: (path) => request("DELETE", path),
  raw: (method, path, options) => request(method, path, { ...options, raw: true }),
};

// Catalogue-type reads used by several pages, fetched once per page load.
const cache = new Map();
export function cached(path) {
  if (!cache.has(path)) {
    cache.set(
      path,
      api.get(path).catch((err) => {
        cache.delete(path);
        throw err;
      }),
    );
  }
  return cache.get(path);
}
export function forget(prefix) {
  for (const key of cache.keys()) if (key.startsWith(prefix)) cache.delete(key);
}

// Every page of a list (for select boxes: agents, groups, domains, trunks). Bounded.
export async function all(path, params = {}, perPage = 100, maxPages = 20) {
  const rows = [];
  for (let page = 1; page <= maxPages; page += 1) {
    const answer = await api.get(path, { ...params, page, per_page: perPage });
    rows.push(...answer.data);
    if (!answer.meta || page >= answer.meta.last_page) break;
  }
  return rows;
}
