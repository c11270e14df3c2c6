// The Trajectories dashboard: plain DOM, no build step, nothing fetched but this plugin's own routes.
// TensorBoard imports this module into its dashboard frame and calls render(); index.html does the same on its own.
// Every trajectory is drawn from the view the plugin serves (swirl_lightning.rollout.view, what `swirl data show`
// prints as text).

const FACETS = [
  ["result", "outcome", ["correct", "wrong", "not scored"]],
  ["verdict", "judge verdict", ["all GOOD", "some BAD", "not judged"]],
  ["tool_error", "tool error", ["yes", "no"]],
  ["invalid", "invalid action", ["yes", "no"]],
  ["steps", "steps", null],
];

const state = {runs: [], run: null, source: null, other: null, filters: {}, selected: null};

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function get(route, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ""));
  const response = await fetch(`${route}?${query}`);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function sourceKey(source) {
  return source ? `${source.run}\n${source.file}` : "";
}

function allSources() {
  return state.runs.flatMap((run) => run.sources);
}

function findSource(key) {
  return allSources().find((source) => sourceKey(source) === key) || null;
}

function linkParameters() {
  // A link names the rollouts with run/file (or find=path suffix); in TensorBoard's frame, read the page's URL.
  const params = new URLSearchParams(window.location.search);
  try {
    if (window.parent !== window) {
      const outer = window.parent.location;
      for (const part of [outer.search.slice(1), outer.hash.split("?")[1] || ""]) {
        for (const [key, value] of new URLSearchParams(part)) if (!params.has(key)) params.set(key, value);
      }
    }
  } catch (error) {
    // another origin: no link parameters from the page
  }
  return params;
}

function percent(value) {
  return value === null || value === undefined ? "n/a" : `${(100 * value).toFixed(1)}%`;
}

function badge(text, kind) {
  return el("span", {class: `badge ${kind || text.replace(/\s+/g, "-").toLowerCase()}`}, text);
}

// -- the page ---------------------------------------------------------------------------------------------------

function skeleton(root) {
  root.replaceChildren(
    el("header", {},
      el("h1", {}, "Trajectories"),
      el("label", {}, "run ", el("select", {id: "run", onchange: (e) => selectRun(e.target.value)})),
      el("label", {}, "rollouts ", el("select", {id: "source", onchange: (e) => selectSource(findSource(e.target.value))})),
      el("label", {}, "compare with ", el("select", {id: "other", onchange: (e) => selectOther(findSource(e.target.value))})),
    ),
    el("section", {id: "overview"}),
    el("section", {id: "filters"}),
    el("div", {id: "count"}),
    el("main", {}, el("ul", {id: "list"}), el("article", {id: "detail"}, el("p", {class: "hint"}, "Pick a trajectory."))),
    el("footer", {id: "error", role: "alert"}),
  );
}

function fillSelect(select, options, selected, empty) {
  select.replaceChildren(...(empty ? [el("option", {value: ""}, empty)] : []),
    ...options.map(([value, label]) => el("option", {value, selected: value === selected}, label)));
}

function showError(error) {
  document.getElementById("error").textContent = error ? String(error.message || error) : "";
}

async function selectRun(run) {
  state.run = state.runs.find((r) => r.run === run) || state.runs[0];
  fillSelect(document.getElementById("run"), state.runs.map((r) => [r.run, r.run]), state.run.run);
  const sources = state.run.sources;
  fillSelect(document.getElementById("source"), sources.map((s) => [sourceKey(s), `${s.label} (${s.trajectories})`]),
    sourceKey(sources[sources.length - 1]));
  drawOverview();
  await selectSource(sources[sources.length - 1]);
}

function drawOverview() {
  // Each evaluation of the run: its step, accuracy (the val/accuracy point) and a link to the rollouts behind it.
  const rows = state.run.sources.map((source) => el("tr", {},
    el("td", {}, source.stage),
    el("td", {}, source.step ?? "—"),
    el("td", {}, percent(source.accuracy)),
    el("td", {}, source.trajectories ?? "—"),
    // An unreadable file says why (as text) where its link would be; the other files still open.
    el("td", {}, source.error ? el("span", {class: "source-error"}, source.error) :
      el("a", {href: "#", class: "open-source", "data-key": sourceKey(source),
        onclick: (event) => { event.preventDefault(); selectSource(source); }}, "rollouts")),
  ));
  document.getElementById("overview").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["stage", "step", "accuracy", "trajectories", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
}

async function selectSource(source, keepSelection = false) {
  if (!source) return;
  state.source = source;
  if (!keepSelection) state.selected = null;
  document.getElementById("source").value = sourceKey(source);
  const others = allSources().filter((s) => sourceKey(s) !== sourceKey(source));
  fillSelect(document.getElementById("other"),
    others.map((s) => [sourceKey(s), `${s.run}: ${s.label}`]), sourceKey(state.other), "— none —");
  if (state.other && sourceKey(state.other) === sourceKey(source)) state.other = null;
  await refresh();
}

async function selectOther(other) {
  state.other = other;
  state.selected = null;
  await refresh();
}

async function refresh() {
  showError(null);
  try {
    const listed = await get("trajectories", {run: state.source.run, file: state.source.file, ...state.filters});
    drawFilters(listed);
    if (state.other) {
      const compared = await get("compare", {run: state.source.run, file: state.source.file,
        other_run: state.other.run, other_file: state.other.file, ...state.filters});
      drawComparisonList(listed, compared);
    } else {
      drawList(listed);
    }
    const first = document.querySelector("#list li");
    if (state.selected === null && first) {
      state.selected = Number(first.dataset.index);  // show something at once: the first of the list
      markSelected();
    }
    if (!first) {
      state.selected = null;
      document.getElementById("detail").replaceChildren(el("p", {class: "hint"}, "No trajectory passes these filters."));
    }
    if (state.selected !== null) await openSelected();
  } catch (error) {
    showError(error);
  }
}

function drawFilters(listed) {
  const controls = FACETS.map(([facet, label, values]) => {
    const counts = listed.counts[facet] || {};
    const known = values || Object.keys(counts).sort((a, b) => Number(a) - Number(b));
    const select = el("select", {name: facet, onchange: (event) => {
      if (event.target.value) state.filters[facet] = event.target.value; else delete state.filters[facet];
      state.selected = null;
      refresh();
    }}, el("option", {value: ""}, "any"),
    known.map((value) => el("option", {value, selected: state.filters[facet] === value}, `${value} (${counts[value] || 0})`)));
    return el("label", {}, `${label} `, select);
  });
  document.getElementById("filters").replaceChildren(...controls);
  document.getElementById("count").textContent = `showing ${listed.shown} of ${listed.total} trajectories`;
}

function rowLabel(row) {
  return `${row.example_id} #${row.sample_index}`;
}

function drawList(listed) {
  const items = listed.rows.map((row) => el("li", {
    class: `row ${state.selected === row.index ? "selected" : ""}`, "data-index": row.index,
    onclick: () => { state.selected = row.index; openSelected(); markSelected(); },
  }, el("span", {class: "id"}, rowLabel(row)), badge(row.result), badge(row.verdict),
  el("span", {class: "meta"}, `${row.steps} steps`),
  row.tool_errors ? badge("tool error", "tool-error") : null, row.invalid_actions ? badge("invalid", "invalid") : null,
  el("div", {class: "answers"}, `answer ${row.final_answer ?? "—"} · gold ${row.gold_answer ?? "—"}`)));
  document.getElementById("list").replaceChildren(...items);
}

function drawComparisonList(listed, compared) {
  const counts = Object.entries(compared.changes).map(([change, n]) => `${n} ${change}`).join(", ");
  document.getElementById("count").textContent =
    `showing ${compared.shown} of ${compared.pairs} questions on both sides (${counts || "none"}) · ` +
    `${compared.before.run}: ${compared.before.label} → ${compared.after.run}: ${compared.after.label}`;
  const items = compared.rows.map((row) => el("li", {
    class: `row pair ${state.selected === row.index ? "selected" : ""}`, "data-index": row.index,
    onclick: () => { state.selected = row.index; openSelected(); markSelected(); },
  }, el("span", {class: "id"}, rowLabel(row)), badge(row.change, `change-${row.change}`),
  el("div", {class: "answers"}, `${row.before.result} → ${row.after.result} · answer ${row.before.final_answer ?? "—"}` +
    ` → ${row.after.final_answer ?? "—"} · gold ${row.before.gold_answer ?? "—"}`)));
  state.comparedRows = compared.rows;
  document.getElementById("list").replaceChildren(...items);
}

function markSelected() {
  for (const item of document.querySelectorAll("#list li")) {
    item.classList.toggle("selected", Number(item.dataset.index) === state.selected);
  }
}

async function openSelected() {
  showError(null);
  const detail = document.getElementById("detail");
  try {
    if (state.other) {
      const row = (state.comparedRows || []).find((r) => r.index === state.selected);
      if (!row) return;
      const pair = await get("pair", {run: state.source.run, file: state.source.file, other_run: state.other.run,
        other_file: state.other.file, example_id: row.example_id, sample_index: row.sample_index});
      detail.replaceChildren(drawPair(pair));
    } else {
      const data = await get("trajectory", {run: state.source.run, file: state.source.file, index: state.selected});
      detail.replaceChildren(drawTrajectory(data.view, `${data.source.run} · ${data.source.label}`));
    }
  } catch (error) {
    showError(error);
  }
}

// -- one trajectory, step by step -----------------------------------------------------------------------------

function field(label, value, className, changed) {
  if (value === null || value === undefined || value === "") return null;
  return el("div", {class: `field ${className} ${changed ? "changed" : ""}`},
    el("span", {class: "label"}, label), el("span", {class: "value"}, value));
}

function drawStep(step, changes) {
  const changed = (name) => changes && changes.fields.includes(name);
  const verdicts = step.verdicts.length
    ? step.verdicts.map((v) => `${v.judge}: ${v.verdict}` + (v.score === null ? "" : ` (${v.score.toFixed(2)})`)).join(", ") : "not judged";
  let action;
  if (step.kind === "tool") action = field("tool call", `${step.tool} <${step.tag}>${step.query}</${step.tag}>`, "call", changed("query") || changed("tool"));
  else if (step.kind === "answer") action = field("answer", step.answer, "answer", changed("answer"));
  else action = field("invalid action", step.invalid_reason, "invalid", changed("invalid_reason"));
  const status = changes ? changes.status : "";
  return el("li", {class: `step ${step.kind} ${status}`, "data-step": step.index},
    el("div", {class: "step-head"}, `step ${step.index} · ${step.kind}`, " ",
      step.verdict ? badge(step.verdict, step.verdict.toLowerCase()) : badge("not judged"),
      step.tool_error ? badge("tool error", "tool-error") : null,
      status && status !== "same" ? badge(status, `change-${status}`) : null),
    field("thinking", step.thinking, "thinking", changed("thinking")),
    action,
    field(step.kind === "tool" ? "tool result" : "note", step.result, `result ${step.tool_error ? "error" : ""}`, changed("result")),
    field("verdicts", verdicts, "verdicts", changed("verdict")));
}

function drawTrajectory(view, caption, differences) {
  const changedSummary = (name) => differences && differences.summary.includes(name);
  const stepChanges = differences ? differences.steps : [];
  return el("div", {class: "trajectory"},
    el("h2", {}, `${view.example_id} #${view.sample_index}`),
    el("div", {class: "caption"}, caption),
    el("div", {class: `summary ${changedSummary("result") ? "changed" : ""}`}, badge(view.result), " ", badge(view.verdict),
      ` ${view.steps} steps · finish ${view.finish_reason ?? "?"}`),
    field("question", view.question, "question"),
    field("gold answer", view.gold_answer ?? "(not recorded)", "gold"),
    field("final answer", view.final_answer ?? "(none)", "final", changedSummary("final_answer")),
    el("ol", {class: "steps"}, view.step_views.map((step) => drawStep(step, stepChanges[step.index - 1]))));
}

function drawPair(pair) {
  const summary = pair.differences.summary.length ? `changed: ${pair.differences.summary.join(", ")}` : "same outcome and answer";
  return el("div", {class: "pair-view"},
    el("div", {class: "pair-head"}, badge(pair.change, `change-${pair.change}`), ` ${summary}`),
    el("div", {class: "sides"},
      el("div", {class: "side before"}, drawTrajectory(pair.before, `${pair.before_source.run} · ${pair.before_source.label}`, pair.differences)),
      el("div", {class: "side after"}, drawTrajectory(pair.after, `${pair.after_source.run} · ${pair.after_source.label}`, pair.differences))));
}

// -- entry point ----------------------------------------------------------------------------------------------

export async function render() {
  document.head.append(el("link", {rel: "stylesheet", href: "style.css"}));
  const root = document.getElementById("trajectories-root") || document.body.appendChild(el("div", {id: "trajectories-root"}));
  skeleton(root);
  try {
    const data = await get("runs");
    state.runs = data.runs;
    if (!state.runs.length) {
      document.getElementById("detail").replaceChildren(el("p", {class: "hint"},
        `No rollouts under ${data.logdir}: swirl validate, test and fit write them to <run>/rollouts/.`));
      return;
    }
    const params = linkParameters();
    let source = null;
    if (params.get("find")) source = findSource(sourceKey(await get("find", {path: params.get("find")})));
    else if (params.get("run") && params.get("file")) source = findSource(`${params.get("run")}\n${params.get("file")}`);
    await selectRun(source ? source.run : state.runs[0].run);
    if (source) await selectSource(source);
  } catch (error) {
    showError(error);
  }
}
