// What every dashboard page shares: calling the admin API as the logged-in user, building DOM
// without innerHTML (every figure shown is text, never markup), refreshing, and formatting.

const body = document.body;
export const page = {
  model: body.dataset.model || "",
  role: body.dataset.role || "",
  refreshMs: Number(body.dataset.refreshMs) || 5000,
};
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Back to the login form, coming back here afterwards (once: parallel calls all get 401).
let leaving = false;
export function toLogin() {
  if (leaving) return;
  leaving = true;
  const next = location.pathname + location.search;
  location.assign(`/ui/login?expired=true&next=${encodeURIComponent(next)}`);
}

// One admin API call with the session cookie; changes carry the CSRF token (and If-Match
// when given). Answers {data, etag}; throws ApiError with the API's own message.
export async function api(path, { method = "GET", body: payload, ifMatch } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  if (payload !== undefined) headers["content-type"] = "application/json";
  if (ifMatch) headers["if-match"] = ifMatch;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    cache: "no-store",
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "the session ended");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || data?.detail || `HTTP ${response.status}`);
  }
  return { data, etag: response.headers.get("etag") };
}

// el("p", {class: "x"}, "text", child, ...): attributes set one by one, children as nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(container, ...children) {
  container.replaceChildren();
  append(container, children);
}

// Refresh `update` every refreshMs (not while the tab is hidden), without reloading the page;
// the footer says when the page last refreshed, or why it could not.
export function every(update) {
  const status = document.getElementById("refresh-status");
  let timer = null;
  async function tick() {
    clearTimeout(timer);
    try {
      await update();
      if (status) status.textContent = `Updated at ${clock(Date.now() / 1000)}.`;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      if (status) status.textContent = `Could not refresh: ${error.message}`;
    }
    timer = setTimeout(tick, page.refreshMs);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) tick();
  });
  tick();
  return tick;
}

export function clock(epochS) {
  return new Date(epochS * 1000).toLocaleTimeString([], { hour12: false });
}

export function when(epochS) {
  return new Date(epochS * 1000).toLocaleString([], { hour12: false });
}

export function pct(value, digits = 1) {
  return value === null || value === undefined ? "n/a" : `${(value * 100).toFixed(digits)} %`;
}

export function ms(value) {
  if (value === null || value === undefined) return "n/a";
  return value >= 100 ? `${value.toFixed(0)} ms` : `${value.toPrecision(3)} ms`;
}

export function num(value, digits = 2) {
  if (value === null || value === undefined) return "n/a";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "−∞";
  return Number(value).toFixed(digits);
}

export function ago(epochS) {
  const seconds = Math.max(0, Date.now() / 1000 - epochS);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

export const KIND_LABELS = {
  insufficient_data: "not enough data",
  healthy: "healthy",
  breach: "breach",
  ready_to_advance: "ready to advance",
};

export function kindBadge(kind) {
  return el("span", { class: `badge kind-${kind || "none"}` }, KIND_LABELS[kind] || kind || "no decision");
}

// A definition list of [term, value] pairs.
export function facts(pairs, attrs = {}) {
  return el("dl", { class: "facts", ...attrs }, pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

// A table in a focusable, labelled scroll region (narrow screens scroll it sideways).
export function table(label, headings, rows) {
  return el(
    "div",
    { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) => (i === 0 ? el("th", { scope: "row" }, c) : el("td", {}, c)))))),
    ),
  );
}
