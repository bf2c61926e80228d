// The overview: every model, its release's split, guard state, last decision and ramp step.
import { api, el, every, replace, ApiError } from "./common.js";
import { split, lastDecision, variantsTable, cohortsList, headline, versionsTable } from "./release-view.js";

const metadata = new Map(); // model -> [{version, meta}]: versions' manifests change rarely

async function versionsOf(model) {
  if (!metadata.has(model)) {
    const { data } = await api(`/v2/models/${encodeURIComponent(model)}`);
    const versions = await Promise.all(data.versions.map(async (version) => {
      try {
        const answer = await api(`/v2/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}`);
        return { version, meta: answer.data };
      } catch (error) {
        return { version, error: error.message };
      }
    }));
    metadata.set(model, versions);
  }
  return metadata.get(model);
}

async function release(model) {
  try {
    return (await api(`/admin/releases/${encodeURIComponent(model)}`)).data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

async function renderModel(card) {
  const model = card.dataset.model;
  const [current, versions] = await Promise.all([release(model), versionsOf(model)]);
  const links = el("p", { class: "links" },
    el("a", { href: `/ui/releases/${encodeURIComponent(model)}` }, `Release ${model}`), " · ",
    el("a", { href: `/ui/shadow/${encodeURIComponent(model)}` }, `Shadow review ${model}`));
  if (current === null) {
    replace(card.querySelector(".body"),
      el("p", {}, "No release flag: every request goes to the default version."),
      versionsTable(model, versions, null), links);
    return;
  }
  replace(card.querySelector(".body"),
    split(current), headline(current), lastDecision(current.guard),
    el("h3", {}, "Variants"), variantsTable(current),
    el("h3", {}, "Cohorts"), cohortsList(current),
    el("h3", {}, "Versions"), versionsTable(model, versions, current), links);
}

every(() => Promise.all([...document.querySelectorAll("section.model")].map(renderModel)));
