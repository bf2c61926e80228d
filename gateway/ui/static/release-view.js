// Pieces of a release that the overview and the release page both show.
import { el, pct, ago, kindBadge, facts, table, ms } from "./common.js";
import { splitBar } from "./charts.js";

export function variantOrder(release) {
  const names = Object.keys(release.variants || {});
  const first = [release.baseline?.variant, release.candidate?.variant].filter(Boolean);
  return [...first, ...names.filter((n) => !first.includes(n)).sort()];
}

export function variantNames(release) {
  const names = {};
  for (const [variant, route] of Object.entries(release.variants || {})) {
    names[variant] = `${variant} (v${route.serve})`;
  }
  return names;
}

export function split(release) {
  if (release.state === "DISABLED") {
    return el("p", { class: "badge kind-breach" }, `Disabled (kill switch): everything goes to ${release.default_variant}.`);
  }
  return splitBar(release.split || {}, variantNames(release), variantOrder(release));
}

export function rampText(ramp) {
  if (!ramp) return "No ramp.";
  const step = `step ${ramp.step + 1} of ${ramp.steps.length} (${ramp.steps.join(" → ")} %)`;
  const next = ramp.next_percent === null || ramp.next_percent === undefined ? "" :
    `, next ${ramp.next_percent} %${ramp.promotes_next ? " (promotes)" : ""}`;
  const bake = ramp.bake_left_s > 0 ? `, ${Math.ceil(ramp.bake_left_s)} s of baking left` : ", baked";
  return `Ramp of version ${ramp.version}, ${ramp.state}: ${step}, at ${ramp.percent} %${next}${bake}.`;
}

export function lastDecision(guard) {
  const decision = guard?.decisions?.[0];
  if (!decision) return el("p", { class: "last-decision" }, kindBadge(null), " The guard has not looked yet.");
  return el("p", { class: "last-decision", "data-kind": decision.kind }, kindBadge(decision.kind), " ", decision.reason);
}

export function variantsTable(release) {
  const roles = { [release.baseline?.variant]: "baseline", [release.candidate?.variant]: "candidate" };
  const rows = variantOrder(release).map((variant) => {
    const route = release.variants[variant];
    const shadows = (route.shadow || []).map((s) => `v${s.version} at ${s.percent} %`).join(", ") || "none";
    const share = release.split?.[variant];
    return [variant, roles[variant] || "", `v${route.serve}`, share === undefined ? "cohorts only" : `${share} %`, shadows];
  });
  return table(`Variants of ${release.model}`, ["Variant", "Role", "Serves", "Share outside cohorts", "Shadowed by"], rows);
}

export function cohortsList(release) {
  if (!release.cohorts?.length) return el("p", { class: "muted" }, "No cohort rules.");
  return el("ul", { class: "cohorts" }, release.cohorts.map((c) =>
    el("li", {}, el("strong", {}, c.name), ` → ${c.variant} (v${c.version}): `, el("code", {}, JSON.stringify(c.rule)))));
}

export function headline(release) {
  return facts([
    ["State", release.state],
    ["Flag", `${release.flag} version ${release.flag_version}`],
    ["Last change", `${ago(release.updated_at)} by ${release.updated_by}`],
    ["Ramp", rampText(release.guard?.ramp)],
  ]);
}

export function versionsTable(model, versions, release) {
  const serving = {};
  for (const [variant, route] of Object.entries(release?.variants || {})) {
    (serving[route.serve] ||= []).push(variant);
  }
  const live = release?.guard?.versions || {};
  const rows = versions.map((v) => {
    const meta = v.meta || {};
    const params = meta.parameters || {};
    const accuracy = params.offline_metrics?.accuracy;
    const figures = live[v.version];
    return [
      `v${v.version}`,
      params.state || (v.error ? "not ready" : "…"),
      serving[v.version]?.join(", ") || (release ? "not routed" : "default"),
      accuracy === undefined ? "n/a" : accuracy.toFixed(3),
      figures ? String(figures.requests) : "0",
      figures ? pct(figures.error_rate, 2) : "n/a",
      figures ? ms(figures.latency?.p99_ms) : "n/a",
    ];
  });
  return table(`Versions of ${model}`, ["Version", "State", "Serves variant", "Offline accuracy", "Requests", "Error rate", "p99"], rows);
}
