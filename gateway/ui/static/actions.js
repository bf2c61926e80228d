// Release manager actions: each form asks for a reason, shows what will change, and sends the
// change to the admin API with the release's ETag (a change made meanwhile is refused: 412).
import { api, el, page, replace, ApiError } from "./common.js";
import { state, refresh } from "./release.js";

const model = encodeURIComponent(page.model);
const forms = document.getElementById("action-forms");
const result = document.getElementById("action-result");
const dialog = document.getElementById("confirm");
const dialogBody = document.getElementById("confirm-body");
let versions = [];
let uid = 0;

function field(label, input) {
  const id = `f${++uid}`;
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, label), input);
}

function reasonField() {
  return field("Reason (audited)", el("input", { name: "reason", type: "text", required: true, maxlength: 500 }));
}

function versionSelect(name = "version") {
  const select = el("select", { name });
  select.dataset.versions = "1";
  return select;
}

function fillVersionSelects() {
  for (const select of forms.querySelectorAll("select[data-versions]")) {
    const chosen = select.value;
    replace(select, versions.map((v) => el("option", { value: v, selected: v === chosen }, `v${v}`)));
  }
}

function form(action, legend, fields, button) {
  return el("form", { class: "action", "data-action": action, novalidate: false },
    el("fieldset", {}, el("legend", {}, legend), fields, el("button", { type: "submit" }, button)));
}

const release = () => state.release;
const candidateShare = (r) => r.split?.[r.candidate.variant] ?? 0;

// What each action sends, and its plain description of the change.
const ACTIONS = {
  rollout(data) {
    const r = release();
    const percent = Number(data.get("percent"));
    return {
      path: "rollout",
      body: { version: data.get("version"), percent, reason: data.get("reason"), force: data.has("force") },
      change: [`The candidate becomes version ${data.get("version")} (now v${r.candidate.version}).`,
        `Its share of the traffic outside the cohorts goes from ${candidateShare(r)} % to ${percent} %; the baseline (v${r.baseline.version}) keeps the rest.`,
        data.has("force") ? "The offline gate is overridden (audited)." : "Refused if the candidate is worse offline than the baseline."],
    };
  },
  cohort(data) {
    const values = String(data.get("values")).split(",").map((v) => v.trim()).filter(Boolean);
    const rule = { in: [{ var: String(data.get("attribute")).trim() }, values] };
    return {
      path: "cohorts",
      body: { name: String(data.get("name")).trim(), rule, version: data.get("version"), reason: data.get("reason") },
      change: [`A cohort rule "${String(data.get("name")).trim()}" sends every request whose ${data.get("attribute")} is one of ${values.join(", ")} to version ${data.get("version")}.`,
        `Rule: ${JSON.stringify(rule)}.`],
    };
  },
  uncohort(data) {
    return {
      path: `cohorts/${encodeURIComponent(data.get("cohort"))}?reason=${encodeURIComponent(data.get("reason"))}`,
      method: "DELETE",
      change: [`The cohort rule "${data.get("cohort")}" is removed: its requests follow the split again.`],
    };
  },
  shadow(data) {
    const chosen = data.getAll("shadow");
    const before = release().shadows.map((s) => `v${s.version} at ${s.percent} % behind ${s.variant}`).join(", ") || "none";
    return {
      path: "shadow",
      body: { versions: chosen, percent: Number(data.get("percent")), reason: data.get("reason") },
      change: [`Shadows now: ${before}.`, chosen.length ? `After: ${chosen.map((v) => `v${v}`).join(", ")} on ${data.get("percent")} % of the baseline's requests.` : "After: no shadow."],
    };
  },
  ramp(data) {
    const steps = String(data.get("steps")).split(",").map((s) => Number(s.trim()));
    return {
      path: "ramp",
      body: { version: data.get("version"), steps, bake_s: Number(data.get("bake")), force: data.has("force"), reason: data.get("reason") },
      change: [`A staged ramp of version ${data.get("version")} starts: ${steps.join(" → ")} %, each step after ${data.get("bake")} s of healthy traffic; the last one promotes it.`],
    };
  },
  control(data, submitter) {
    const what = submitter?.value || "pause";
    const words = {
      pause: "The ramp stays at its step until resumed (the guard still rolls back on a breach).",
      resume: "The ramp goes on from its step.",
      abort: "The ramp stops and all traffic goes back to the baseline.",
      promote: "The candidate becomes the baseline and gets all traffic.",
      rollback: "All traffic goes to the baseline; the candidate gets none.",
      disable: "Kill switch: the flag is disabled and every request goes to the default variant.",
      enable: "The flag is enabled again.",
    };
    const ramp = ["pause", "resume", "abort"].includes(what);
    return { path: ramp ? `ramp/${what}` : what, body: { reason: data.get("reason") }, change: [words[what]], label: what };
  },
};

function build() {
  const percent = el("input", { name: "percent", type: "number", min: 0, max: 100, step: 1, required: true });
  const shadowBoxes = el("div", { class: "checks", id: "shadow-versions" });
  const cohortSelect = el("select", { name: "cohort", required: true });
  replace(forms,
    form("rollout", "Candidate percentage", [field("Candidate version", versionSelect()), field("Percent of traffic (outside cohorts)", percent),
      reasonField(), field("Override the offline gate", el("input", { name: "force", type: "checkbox" }))], "Review rollout"),
    form("cohort", "Add a cohort", [field("Name", el("input", { name: "name", type: "text", required: true, pattern: "[A-Za-z0-9_.-]+" })),
      field("Context attribute", el("input", { name: "attribute", type: "text", required: true, value: "tier" })),
      field("Values (comma separated)", el("input", { name: "values", type: "text", required: true })),
      field("Serve version", versionSelect()), reasonField()], "Review cohort"),
    form("uncohort", "Remove a cohort", [field("Cohort", cohortSelect), reasonField()], "Review removal"),
    form("shadow", "Shadow", [el("fieldset", { class: "inner" }, el("legend", {}, "Shadow versions"), shadowBoxes),
      field("Percent of the baseline's requests", el("input", { name: "percent", type: "number", min: 0, max: 100, step: "any", required: true, value: 100 })),
      reasonField()], "Review shadow"),
    form("ramp", "Start a staged ramp", [field("Version", versionSelect()),
      field("Steps (percent, comma separated)", el("input", { name: "steps", type: "text", required: true, value: "1,5,25,50,100" })),
      field("Bake time per step (s)", el("input", { name: "bake", type: "number", min: 0, step: "any", required: true, value: 60 })),
      field("Override the offline gate", el("input", { name: "force", type: "checkbox" })), reasonField()], "Review ramp"),
    el("form", { class: "action", "data-action": "control" },
      el("fieldset", {}, el("legend", {}, "Ramp, promotion and rollback"), reasonField(),
        el("div", { class: "buttons" }, ["pause", "resume", "abort", "promote", "rollback", "disable", "enable"].map((what) =>
          el("button", { type: "submit", name: "what", value: what, class: what === "rollback" || what === "abort" || what === "disable" ? "danger" : "" },
            { pause: "Pause ramp", resume: "Resume ramp", abort: "Abort ramp", promote: "Promote", rollback: "Roll back", disable: "Disable", enable: "Enable" }[what]))))));
  state.onRelease.push((r) => {
    if (document.activeElement !== percent && percent.value === "") percent.value = candidateShare(r);
    const current = new Set(r.shadows.map((s) => s.version));
    if (!shadowBoxes.dataset.filled) {
      replace(shadowBoxes, versions.map((v) => {
        const id = `shadow-v${v}`;
        return el("span", { class: "check" }, el("input", { type: "checkbox", name: "shadow", value: v, id, checked: current.has(v) }), el("label", { for: id }, `v${v}`));
      }));
      shadowBoxes.dataset.filled = "1";
    }
    const chosen = cohortSelect.value;
    replace(cohortSelect, r.cohorts.map((c) => el("option", { value: c.name, selected: c.name === chosen }, c.name)));
  });
  if (state.release) state.onRelease.at(-1)(state.release);
  fillVersionSelects();
  for (const f of forms.querySelectorAll("form.action")) f.addEventListener("submit", review);
}

function confirmChange(plan) {
  replace(dialogBody, el("ul", {}, plan.change.map((line) => el("li", {}, line))),
    el("p", {}, `Reason: "${plan.reason}". Flag version ${release().flag_version} → ${release().flag_version + 1}.`));
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true }));
}

async function review(event) {
  event.preventDefault();
  const target = event.currentTarget;
  const data = new FormData(target);
  const plan = ACTIONS[target.dataset.action](data, event.submitter);
  plan.reason = data.get("reason");
  if (!(await confirmChange(plan))) {
    result.textContent = "Nothing changed.";
    return;
  }
  try {
    const { data: after } = await api(`/admin/releases/${model}/${plan.path}`, {
      method: plan.method || "POST", body: plan.body, ifMatch: state.etag,
    });
    result.textContent = `Done: ${target.dataset.action === "control" ? plan.label : target.dataset.action} is in force (flag version ${after.flag_version}).`;
    result.className = "ok";
    target.reset();
  } catch (error) {
    result.className = "error";
    result.textContent = error instanceof ApiError && error.status === 412
      ? "The release changed since this page last loaded it: review it and try again."
      : `Refused (${error.status || "error"}): ${error.message}`;
  }
  await refresh();
}

api(`/v2/models/${model}`).then(({ data }) => {
  versions = data.versions;
  build();
});
