// The shadow review: per pair and cohort, agreement with its interval, the difference
// distribution and both sides' latency; the disagreements with both outputs and the input.
import { api, el, every, replace, page, pct, ms, num, when, facts, table } from "./common.js";
import { intervalBar, quantileStrip, tensorImage, pairedBars } from "./charts.js";

const model = encodeURIComponent(page.model);
const range = document.getElementById("range");
let shown = null; // the request id whose details are open
let records = [];

function agreementText(stats) {
  const a = stats.agreement;
  return a ? `${pct(a.rate)} agree (95 % interval ${pct(a.low)} to ${pct(a.high)}) over ${stats.rows} rows` : "nothing compared yet";
}

function statsFacts(stats, who) {
  const a = stats.agreement;
  return [
    a ? intervalBar(a.rate, a.low, a.high, `Agreement of ${who}: ${agreementText(stats)}`) : null,
    facts([
      ["Agreement", agreementText(stats)],
      ["Records", `${stats.count} (${stats.compared} compared, ${stats.disagreements} disagreeing)`],
      ["Largest difference", stats.diff ? `p50 ${num(stats.diff.p50, 3)}, p90 ${num(stats.diff.p90, 3)}, p99 ${num(stats.diff.p99, 3)}, max ${num(stats.diff.max, 3)}` : "n/a"],
      ["Latency served", `p50 ${ms(stats.latency.primary.p50_ms)}, p99 ${ms(stats.latency.primary.p99_ms)}`],
      ["Latency shadow", `p50 ${ms(stats.latency.shadow.p50_ms)}, p99 ${ms(stats.latency.shadow.p99_ms)}`],
      ["Errors", `served ${stats.errors.primary}, shadow ${stats.errors.shadow}, timeouts ${stats.errors.timeout}`],
    ]),
    stats.diff ? quantileStrip(stats.diff, `Distribution of the largest absolute output difference for ${who}: p50 ${num(stats.diff.p50, 3)}, p90 ${num(stats.diff.p90, 3)}, p99 ${num(stats.diff.p99, 3)}, max ${num(stats.diff.max, 3)}`) : null,
  ];
}

function pairCard(pair) {
  const who = `v${pair.primary} shadowed by v${pair.shadow}`;
  const cohorts = pair.cohorts.map((c) => {
    const s = c.stats;
    return [c.cohort || "(no cohort)", String(s.count), s.agreement ? pct(s.agreement.rate) : "n/a",
      s.agreement ? `${pct(s.agreement.low)} – ${pct(s.agreement.high)}` : "n/a", s.diff ? num(s.diff.p99, 3) : "n/a",
      `${ms(s.latency.primary.p99_ms)} / ${ms(s.latency.shadow.p99_ms)}`, String(s.errors.shadow + s.errors.timeout)];
  });
  return el("section", { class: "card pair", "data-pair": `${pair.primary}-${pair.shadow}`, "aria-label": who },
    el("h3", {}, who), statsFacts(pair.stats, who),
    el("h4", {}, "Per cohort"),
    table(`Cohorts of ${who}`, ["Cohort", "Records", "Agreement", "95 % interval", "Difference p99", "p99 served / shadow", "Shadow errors"], cohorts));
}

function outputOf(side) {
  const tensors = side?.tensors || {};
  const probabilities = tensors.probabilities || Object.values(tensors).find((t) => t?.datatype?.startsWith("FP"));
  return { classes: side?.classes || [], values: probabilities?.data || null };
}

function detail(record) {
  const primary = outputOf(record.primary_output);
  const shadow = outputOf(record.shadow_output);
  const input = Object.entries(record.inputs || {})[0];
  let picture;
  if (input && input[1].data) {
    const width = input[1].shape.at(-1);
    picture = tensorImage(input[1].data.slice(0, width), `Input ${input[0]} of request ${record.request_id}, drawn as an image`) ||
      el("p", {}, `Input ${input[0]}: ${JSON.stringify(input[1].data.slice(0, 64))}`);
  } else {
    picture = el("p", { class: "muted" }, record.inputs_dropped ? "The input was too large to keep." : "Inputs are not kept for this release (set shadow.keepInputs in its flag).");
  }
  const labels = primary.values ? primary.values.map((_, i) => String(i)) : [];
  const body = document.querySelector("#disagreement-detail .detail-body");
  replace(body,
    el("div", { class: "detail-grid" },
      el("figure", { class: "input" }, picture, el("figcaption", {}, "Input")),
      el("div", {},
        facts([
          ["Request", record.request_id],
          ["When", when(record.at)],
          ["Served", `v${record.primary_version} answered ${primary.classes.join(", ") || "n/a"} in ${ms(record.primary_latency_ms)}`],
          ["Shadow", `v${record.shadow_version} answered ${shadow.classes.join(", ") || "n/a"} in ${ms(record.shadow_latency_ms)}`],
          ["Largest difference", num(record.max_abs_diff, 3)],
          ["Variant, cohort", `${record.variant || "n/a"}, ${record.cohort || "no cohort"}`],
          ["Context", JSON.stringify(record.context || {})],
        ]),
        primary.values && shadow.values
          ? pairedBars(labels, primary.values, shadow.values, [`v${record.primary_version}`, `v${record.shadow_version}`],
            `Probabilities per class: v${record.primary_version} ${primary.values.map((v) => num(v, 2)).join(" ")}; v${record.shadow_version} ${shadow.values.map((v) => num(v, 2)).join(" ")}`)
          : null,
        el("details", {}, el("summary", {}, "Both outputs as JSON"),
          el("pre", {}, JSON.stringify({ served: record.primary_output, shadow: record.shadow_output }, null, 1))))));
}

function open(record) {
  shown = record.request_id;
  const section = document.getElementById("disagreement-detail");
  section.hidden = false;
  document.getElementById("detail-title").textContent = `Disagreement on request ${record.request_id}`;
  detail(record);
  document.getElementById("detail-title").focus();
}

function drawDisagreements() {
  const tbody = document.querySelector("#disagreements tbody");
  if (!records.length) {
    replace(tbody, el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No disagreement in this range.")));
    return;
  }
  replace(tbody, records.map((r) => el("tr", { "data-request": r.request_id, class: r.request_id === shown ? "open" : "" },
    el("td", {}, when(r.at)), el("td", {}, el("code", {}, r.request_id)), el("td", {}, `v${r.primary_version} vs v${r.shadow_version}`),
    el("td", {}, `${(r.primary_output?.classes || []).join(",")} vs ${(r.shadow_output?.classes || []).join(",")}`),
    el("td", {}, num(r.max_abs_diff, 3)), el("td", {}, r.cohort || "none"),
    el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => open(r) }, "Open", el("span", { class: "visually-hidden" }, ` request ${r.request_id}`))))));
}

async function load() {
  const since = encodeURIComponent(range.value);
  const [summary, dis] = await Promise.all([
    api(`/admin/shadow/${model}?since=${since}`),
    api(`/admin/shadow/${model}/disagreements?since=${since}&limit=25`),
  ]);
  const pairs = summary.data.pairs;
  replace(document.getElementById("pairs"), pairs.length ? pairs.map(pairCard) : el("p", { class: "muted" }, "No shadow record in this range."));
  records = dis.data.disagreements;
  drawDisagreements();
}

const refresh = every(load);
range.addEventListener("change", () => refresh());
