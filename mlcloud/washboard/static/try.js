// "Try a model": drop an image or paste a JSON row, pick a route, see the answer and the model
// that made it. The washboard sends the request on to the HTTP API (POST /api/try/…, tryit.py)
// and hands back its status, headers, latency and body. Uses app.js's helpers (h, $, state, TOKEN_KEY).
"use strict";

const KIND_TEXT = { image: "image → top-k", rows: "rows → predictions", tensor: "JSON tensor" };

// What a route takes, from its model's first input: an image (it takes 8-bit pixels, or is NCHW or
// NHWC), rows of features ([rows, features]), or else a JSON tensor.
function routeKind(m) {
  const input = (m.inputs || [])[0];
  if (!input) return "tensor";
  if (input.image_datatype || (input.shape && input.shape.length === 4)) return "image";
  if (input.shape && input.shape.length === 2) return "rows";
  return "tensor";
}

function tryRoutes() {
  const byName = new Map();
  for (const m of state.sections.models) if (m.name && !byName.has(m.name)) byName.set(m.name, m);
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

function chosenRoute() {
  return tryRoutes().find((m) => m.name === $("try-route").value);
}

// Redrawn only when a route, its bindle, state or kind changes, so a choice survives the live updates.
function renderTryRoutes() {
  const select = $("try-route");
  const routes = tryRoutes();
  const sig = JSON.stringify(routes.map((m) => [m.name, m.bindle_id, m.state, routeKind(m)]));
  if (select.dataset.sig === sig) return;
  select.dataset.sig = sig;
  const chosen = select.value;
  select.replaceChildren(...routes.map((m) => h("option", { value: m.name },
    `/${m.name} · ${m.bindle_id} · ${KIND_TEXT[routeKind(m)]}${m.state === "READY" ? "" : ` (${m.state})`}`)));
  if (routes.some((m) => m.name === chosen)) select.value = chosen;
  describeRoute();
}

function describeRoute() {
  const m = chosenRoute();
  const names = m && m.feature_names && m.feature_names.length ? m.feature_names : null;
  $("try-json").placeholder = names
    ? `paste a JSON row: {${names.map((n) => `"${n}": …`).join(", ")}}, [${names.map(() => "…").join(", ")}] or {"instances": […]}`
    : m && routeKind(m) === "tensor"
      ? 'paste a JSON tensor: {"dimensions": [1, 4], "valueTypes": ["ValueF32"], "data": [0, 0, 128, 63, …]}'
      : 'or paste a JSON row: [5.1, 3.5, 1.4, 0.2], {"feature": 1.0, …} or {"instances": [[…], …]}';
}

async function trySend(kind, body, contentType) {
  const m = chosenRoute();
  const query = kind === "predict" && $("try-proba").checked ? "?proba=1" : "";
  const headers = { "Content-Type": contentType };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  $("try-result").replaceChildren(h("p", { class: "muted" }, `asking /${m.name} …`));
  const response = await fetch(`/api/try/${encodeURIComponent(m.name)}/${kind}${query}`, { method: "POST", headers, body });
  let data = {};
  try { data = await response.json(); } catch { /* not JSON: reported below */ }
  if (!response.ok) {
    const err = data.error || {};
    throw new Error(`${err.kind || response.status}: ${err.message || response.statusText}`);
  }
  showAnswer(data, kind);
}

// Every path that can fail ends here: the panel shows the error, never a stale answer.
async function attempt(run) {
  try {
    if (!chosenRoute()) throw new Error("no route to try: the lattice serves no model yet");
    await run();
  } catch (err) {
    showError(err.message);
  }
}

function showError(text) {
  $("try-result").replaceChildren(h("p", { class: "error try-error" }, text));
}

function tryImage(file) {
  attempt(async () => {
    const m = chosenRoute();
    if (routeKind(m) !== "image") throw new Error(`/${m.name} takes ${KIND_TEXT[routeKind(m)]}, not an image: paste JSON`);
    await trySend("matches", file, file.type || "application/octet-stream");
  });
}

function tryJson() {
  attempt(async () => {
    const m = chosenRoute();
    const text = $("try-json").value.trim();
    if (!text) throw new Error("paste a JSON row first (or drop an image)");
    let parsed;
    try { parsed = JSON.parse(text); } catch (err) { throw new Error(`not JSON: ${err.message}`); }
    const kind = routeKind(m);
    if (kind === "image") throw new Error(`/${m.name} takes images: drop one, or choose a file`);
    if (kind === "tensor") return trySend("tensor", JSON.stringify(parsed), "application/json");
    await trySend("predict", JSON.stringify(asInstances(parsed)), "application/json");
  });
}

// One row (a list of numbers or an object keyed by feature name), a list of rows, or a whole body.
function asInstances(parsed) {
  if (parsed && !Array.isArray(parsed) && typeof parsed === "object" && "instances" in parsed) return parsed;
  const many = Array.isArray(parsed) && parsed.length > 0 && parsed.every((r) => Array.isArray(r) || (r && typeof r === "object"));
  return { instances: many ? parsed : [parsed] };
}

function showAnswer(data, kind) {
  const headers = data.headers || {};
  const sha = headers["x-model-sha256"] || "";
  const meta = h("div", { class: "try-meta" },
    h("span", { class: `badge ${data.status < 400 ? "healthy" : "failed"}` }, String(data.status)),
    h("span", { class: "try-latency" }, `${num(data.latency_ms, " ms")}`),
    headers["x-model"] ? h("span", {}, "X-Model ", h("code", { class: "try-model" }, headers["x-model"])) : null,
    sha ? h("span", {}, "sha256 ", h("code", { class: "try-sha", title: sha, onclick: () => copy(sha) }, short(sha, 12))) : null);
  const body = data.body;
  let content;
  if (data.status >= 400) {
    const err = (body && body.error) || {};
    content = h("p", { class: "error try-error" },
      typeof err === "object" && err.message ? `${err.kind || data.status}: ${err.message}` : JSON.stringify(body));
  } else if (kind === "matches" && Array.isArray(body)) {
    content = h("ol", { class: "try-bars" }, body.map((match) => {
      const percent = Math.max(0, Math.min(100, match.probability * 100));
      return h("li", { class: "try-bar" },
        h("span", { class: "try-label", title: match.label }, match.label),
        h("span", { class: "try-track" }, h("span", { class: "try-fill", style: `width: ${percent.toFixed(1)}%` })),
        h("span", { class: "try-value" }, `${percent.toFixed(1)} %`));
    }));
  } else {
    content = h("pre", { class: "try-json-answer" }, asText(body));
  }
  $("try-result").replaceChildren(meta, content);
}

// Predictions one row a line (still JSON); anything else indented.
function asText(body) {
  if (body && Array.isArray(body.predictions)) {
    return `{"predictions": [\n${body.predictions.map((row) => "  " + JSON.stringify(row)).join(",\n")}\n]}`;
  }
  return JSON.stringify(body, null, 2);
}

document.addEventListener("models-rendered", renderTryRoutes);
document.addEventListener("DOMContentLoaded", () => {
  const drop = $("try-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) tryImage(file);
  });
  $("try-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = ""; // choosing the same file again still sends it
    if (file) tryImage(file);
  });
  $("try-send").addEventListener("click", tryJson);
  $("try-route").addEventListener("change", describeRoute);
});
