// The release page: live figures per version as charts, the guard's view and decisions in
// words, the audit timeline, and (for release managers) the actions.
import { api, el, every, replace, page, pct, ms, num, facts, table, ApiError } from "./common.js";
import { lineChart } from "./charts.js";
import { split, headline, lastDecision, variantsTable, cohortsList } from "./release-view.js";
import { decisionItem, auditItem } from "./explain.js";

const model = encodeURIComponent(page.model);
const history = { samples: [], keepS: 3600 };
export const state = { release: null, etag: null, onRelease: [] };

async function loadHistory() {
  const last = history.samples.at(-1);
  const since = last ? `?since=${last.at}` : "";
  const { data } = await api(`/ui/api/history/${model}${since}`);
  history.keepS = data.keep_s;
  history.samples.push(...data.samples);
  const cutoff = (history.samples.at(-1)?.at ?? 0) - history.keepS;
  history.samples = history.samples.filter((s) => s.at >= cutoff);
}

function seriesOf(field) {
  const names = new Set();
  for (const s of history.samples) {
    Object.keys(s.versions).forEach((v) => names.add(`v${v}`));
    Object.keys(s.shadow_versions).forEach((v) => names.add(`v${v} (shadow)`));
  }
  return [...names].sort().map((name) => {
    const shadow = name.endsWith("(shadow)");
    const version = name.slice(1).replace(" (shadow)", "");
    return {
      name,
      points: history.samples.map((s) => {
        const point = (shadow ? s.shadow_versions : s.versions)[version];
        return [s.at, point ? point[field] : null];
      }),
    };
  });
}

function drawCharts() {
  const plot = (id) => document.querySelector(`#${id} .plot`);
  lineChart(plot("chart-rps"), { label: "Requests per second", series: seriesOf("requests_per_s"), format: (v) => num(v, 1) });
  lineChart(plot("chart-errors"), { label: "Error rate", series: seriesOf("error_rate"), format: (v) => pct(v, 2), yMax: 0.01 });
  lineChart(plot("chart-p50"), { label: "Latency p50", series: seriesOf("p50_ms"), format: (v) => num(v, 2) });
  lineChart(plot("chart-p99"), { label: "Latency p99", series: seriesOf("p99_ms"), format: (v) => num(v, 2) });
  lineChart(plot("chart-accuracy"), { label: "Live accuracy", series: seriesOf("accuracy"), format: (v) => num(v, 2), yMax: 1 });
  const guard = history.samples.filter((s) => s.guard);
  lineChart(plot("chart-statistic"), {
    label: "Error test",
    format: (v) => num(v, 1),
    series: [
      { name: "statistic", points: guard.map((s) => [s.at, s.guard.statistic]) },
      { name: "threshold (rollback above)", points: guard.map((s) => [s.at, s.guard.threshold]), style: { colour: "#a4161a", dash: "6 3" } },
    ],
  });
}

function armRow(name, snapshot) {
  if (!snapshot) return [name, "n/a", "", "", "", "", "", ""];
  return [
    `${name} (v${snapshot.version})`, String(snapshot.requests), String(snapshot.errors), pct(snapshot.error_rate, 2),
    String(snapshot.fallbacks), ms(snapshot.latency?.p50_ms), ms(snapshot.latency?.at_quantile_ms),
    snapshot.live_accuracy === null ? `n/a (${snapshot.feedback_total} labels)` : `${num(snapshot.live_accuracy, 3)} (${snapshot.feedback_total} labels)`,
  ];
}

function drawGuard(release) {
  const guard = release.guard || {};
  const window = guard.window;
  const container = document.getElementById("guard-window");
  if (!window) {
    replace(container, lastDecision(guard), el("p", { class: "muted" }, "No window: the release is disabled or not watched."));
  } else {
    const test = window.error_test || {};
    const q = Math.round((guard.policy?.["guard.latencyQuantile"] ?? 0.99) * 100);
    keepOpen(container, () => replace(container,
      lastDecision(guard),
      el("p", { class: "statistic", "data-statistic": test.statistic, "data-threshold": test.threshold },
        `Error test statistic ${num(test.statistic)} against its threshold ${num(test.threshold)} (alpha ${test.alpha}): `,
        test.rejects ? "crossed: the candidate's errors are significantly worse." : "below: no evidence the candidate is worse."),
      el("p", {}, `Window since flag version ${window.flag_version}, ${Math.round(window.length_s)} s long.`),
      table("Window per arm", ["Arm", "Requests", "Errors", "Error rate", "Fallbacks", "p50", `p${q}`, "Live accuracy"],
        [armRow("candidate", window.candidate), armRow("baseline", window.baseline)]),
      el("details", { "data-id": "policy" }, el("summary", {}, "Policy"),
        facts(Object.entries(guard.policy || {}).map(([k, v]) => [k, JSON.stringify(v)])))));
  }
  const decisions = guard.decisions || [];
  replace(document.getElementById("decisions"),
    decisions.length ? decisions.map(decisionItem) : el("li", { class: "muted" }, "No decision yet."));
}

async function loadRelease() {
  let answer;
  try {
    answer = await api(`/admin/releases/${model}`);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
    replace(document.getElementById("release-summary"), el("p", {}, `${page.model} has no release flag: every request goes to its default version.`));
    replace(document.getElementById("guard-window"), el("p", { class: "muted" }, "The guard watches releases only."));
    replace(document.getElementById("decisions"));
    return;
  }
  const { data, etag } = answer;
  state.release = data;
  state.etag = etag;
  replace(document.getElementById("release-summary"),
    split(data), headline(data), el("h3", {}, "Variants"), variantsTable(data), el("h3", {}, "Cohorts"), cohortsList(data));
  drawGuard(data);
  state.onRelease.forEach((f) => f(data));
}

// Re-rendering keeps what the reader opened: the details of entries, by their id.
function keepOpen(container, render) {
  const opened = new Set([...container.querySelectorAll("[data-id] details[open], details[data-id][open]")]
    .map((d) => d.closest("[data-id]").dataset.id));
  render();
  for (const node of container.querySelectorAll("[data-id]")) {
    const details = node.matches("details") ? node : node.querySelector("details");
    if (details && opened.has(node.dataset.id)) details.open = true;
  }
}

async function loadAudit() {
  const { data } = await api(`/admin/audit?model=${model}&limit=30`);
  const audit = document.getElementById("audit");
  keepOpen(audit, () => replace(audit,
    data.entries.length ? data.entries.map(auditItem) : el("li", { class: "muted" }, "No change yet.")));
}

export const refresh = every(async () => {
  await Promise.all([loadRelease(), loadHistory().then(drawCharts), loadAudit()]);
});

if (document.getElementById("actions")) import("./actions.js");
