// The guard's decisions and the audit log in plain words, with the figures they rest on.
import { el, clock, when, pct, ms, num, kindBadge, facts } from "./common.js";

const VERDICTS = {
  insufficient_data: "is waiting for enough data",
  healthy: "found the release healthy",
  breach: "found a breach",
  ready_to_advance: "found the release ready to advance",
};

const ACTIONS = {
  rollback: "It rolled the release back: all traffic now goes to the baseline.",
  rollback_disabled: "It did not roll back, because guard.autoRollback is off for this release.",
  rollback_failed: "It tried to roll back and failed; the gateway's log says why.",
  superseded: "Another replica or person changed the flag first, so it did nothing.",
  advance: "It advanced the ramp to its next step.",
  promote: "It took the ramp's last step: the candidate is now the baseline.",
  advance_failed: "It tried to advance the ramp and failed; the gateway's log says why.",
};

function arm(name, figures) {
  if (!figures) return `${name}: no figures`;
  const rate = figures.error_rate === null || figures.error_rate === undefined ? "no requests" : pct(figures.error_rate, 2);
  const q = figures.quantile ? `p${Math.round(figures.quantile * 100)}` : "p99";
  const accuracy = figures.live_accuracy === null || figures.live_accuracy === undefined
    ? "" : `, live accuracy ${num(figures.live_accuracy, 3)} over ${figures.feedback_total} labels`;
  return `${name} (version ${figures.version}): ${figures.requests} requests, ${figures.errors} errors (${rate}), ` +
    `p50 ${ms(figures.latency_p50_ms)}, ${q} ${ms(figures.latency_at_quantile_ms)}${accuracy}`;
}

// One sentence of why, then the figures in words.
export function explainDecision(decision) {
  const evidence = decision.evidence || {};
  const window = evidence.window || {};
  const test = evidence.error_test || {};
  const latency = evidence.latency || {};
  const lead = `At ${clock(decision.at)}, under flag version ${decision.flag_version}` +
    (window.length_s !== undefined ? ` after ${Math.round(window.length_s)} s of its window` : "") +
    `, the guard ${VERDICTS[decision.kind] || decision.kind}: ${decision.reason}.`;
  const figures = [];
  if (test.statistic !== undefined) {
    figures.push(`Error test: statistic ${num(test.statistic)} against a threshold of ${num(test.threshold)} ` +
      `(alpha ${test.alpha}); ${test.rejects ? "it crossed the threshold" : "a rollback needs it to reach the threshold"}.`);
  }
  figures.push(`${arm("Candidate", evidence.candidate)}.`, `${arm("Baseline", evidence.baseline)}.`);
  if (latency.ratio !== null && latency.ratio !== undefined) {
    figures.push(`Latency ratio at p${Math.round((latency.quantile || 0.99) * 100)}: ${num(latency.ratio)}× ` +
      `(a breach needs more than ${latency.factor}×).`);
  }
  if (evidence.min_sample !== undefined) figures.push(`Minimum sample per arm: ${evidence.min_sample}.`);
  const action = decision.action ? ACTIONS[decision.action] || `Action: ${decision.action}.` : null;
  return { lead, figures, action };
}

export function decisionItem(decision) {
  const { lead, figures, action } = explainDecision(decision);
  return el("li", { class: `decision kind-${decision.kind}`, "data-kind": decision.kind },
    el("p", {}, kindBadge(decision.kind), " ", el("span", { class: "why" }, lead),
      decision.looks > 1 ? el("span", { class: "muted" }, ` (the same for ${decision.looks} looks)`) : null),
    action ? el("p", { class: "action" }, action) : null,
    el("ul", { class: "figures" }, figures.map((f) => el("li", {}, f))));
}

function value(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

export function diffList(diff) {
  if (!diff || !diff.length) return el("p", { class: "muted" }, "No change to the flag.");
  return el("ul", { class: "diff" }, diff.map((change) => el("li", {},
    el("code", {}, change.path || "/"), ": ",
    change.op === "add" ? ["added ", el("code", {}, value(change.after))]
      : change.op === "remove" ? ["removed ", el("code", {}, value(change.before))]
        : [el("code", {}, value(change.before)), " → ", el("code", {}, value(change.after))])));
}

export function auditItem(entry) {
  const versions = entry.version_after !== null && entry.version_after !== undefined
    ? `flag version ${entry.version_before ?? "new"} → ${entry.version_after}` : "no flag write";
  const evidence = entry.evidence;
  return el("li", { class: "audit-entry", "data-action": entry.action, "data-id": entry.id },
    el("p", {}, el("strong", {}, entry.action.replaceAll("_", " ")), ` by ${entry.actor}, ${when(entry.at)} (${versions})`),
    el("p", {}, entry.reason ? ["Reason: ", el("q", {}, entry.reason)] : el("span", { class: "muted" }, "No reason given.")),
    el("details", {}, el("summary", {}, `What changed (${(entry.diff || []).length})`), diffList(entry.diff),
      evidence ? [el("p", {}, "Evidence:"), evidenceFacts(evidence)] : null));
}

function evidenceFacts(evidence) {
  const pairs = [];
  if (evidence.reason) pairs.push(["Why", evidence.reason]);
  if (evidence.error_test) pairs.push(["Error test", `statistic ${num(evidence.error_test.statistic)} vs threshold ${num(evidence.error_test.threshold)}`]);
  if (evidence.candidate) pairs.push(["Candidate", arm("candidate", evidence.candidate)]);
  if (evidence.baseline) pairs.push(["Baseline", arm("baseline", evidence.baseline)]);
  if (evidence.offline_gate) pairs.push(["Offline gate", JSON.stringify(evidence.offline_gate)]);
  if (!pairs.length) pairs.push(["Figures", JSON.stringify(evidence)]);
  return facts(pairs);
}
