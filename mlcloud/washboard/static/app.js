// The washboard page: renders the lattice from the server's event stream (/api/stream) and
// runs actions (scale an actor, stop/start a provider) after a confirmation dialog.
// Plain DOM, no framework: every section is re-rendered from its data when it changes, and
// every text from the lattice goes in through textContent, never as HTML.
"use strict";

const STALE_AFTER = 8; // seconds without a fresh control-interface poll before the page says so

const state = {
  sections: { status: {}, hosts: [], actors: [], providers: [], links: [], models: [], experiments: { splits: [] } },
  feed: [],
  clockOffset: 0, // server clock minus this browser's clock, in seconds
  streamOpen: false,
  lastMessage: 0,
  filter: "",
};

// ---- small helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);
const now = () => Date.now() / 1000 + state.clockOffset;

function short(key, n = 8) {
  if (!key) return "";
  return key.length > n + 2 ? key.slice(0, n) + "…" : key;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${seconds % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 24) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

// Relative times are refreshed every second by tick(), from the timestamp kept in data-at.
function ago(at, suffix = " ago") {
  return h("span", { class: "ago", dataset: { at: at ?? "", suffix }, title: at ? new Date(at * 1000).toLocaleString() : "" },
    at ? duration(now() - at) + suffix : "–");
}

function since(at) {
  return h("span", { class: "ago uptime", dataset: { at: at ?? "", suffix: "" } }, at ? duration(now() - at) : "–");
}

function badge(status, extra) {
  const s = (status || "unknown").toLowerCase();
  return h("span", { class: `badge ${s}`, title: extra || "" }, s);
}

function chip(text, cls = "") {
  return h("span", { class: `chip ${cls}` }, text);
}

function keyCell(name, key, sub) {
  return h("div", { class: "ident" },
    h("span", { class: "name" }, name || short(key, 12)),
    h("code", { class: "key", title: key, onclick: () => copy(key) }, short(key, 10)),
    sub ? h("span", { class: "sub" }, sub) : null);
}

function copy(text) {
  if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => toast(`Copied ${short(text, 16)}`), () => {});
}

function td(label, ...children) {
  return h("td", { "data-label": label }, ...children);
}

function num(value, unit = "") {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(value < 10 ? 2 : 1) + unit;
  return String(value) + unit;
}

// Actor and provider rows show host names: they are redrawn when a name changes, not on every heartbeat.
function hostNamesSig() {
  return "@" + state.sections.hosts.map((x) => `${x.id}=${(x.labels || {}).hostname || ""}`).join(",");
}

function hostName(hostId) {
  const hosts = state.sections.hosts;
  const host = hosts.find((x) => x.id === hostId);
  const name = host && host.labels && host.labels.hostname;
  if (!name) return short(hostId, 10);
  const shared = hosts.filter((x) => (x.labels || {}).hostname === name).length > 1;
  return shared ? `${name} (${short(hostId, 6)})` : name;
}

function emptyRow(table, columns, text) {
  const tbody = $(table).tBodies[0];
  tbody.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: columns }, text)));
}

// Replace only the rows whose data changed, keyed by `key`: a row being clicked, hovered or
// selected survives updates of its neighbours (a heartbeat must not eat a click on "Scale…").
function patchRows(container, items, key, render) {
  const old = new Map();
  for (const el of container.children) if (el.dataset.key) old.set(el.dataset.key, el);
  const rows = items.map((item) => {
    const k = key(item);
    const sig = JSON.stringify(item);
    const existing = old.get(k);
    if (existing && existing.dataset.sig === sig) return existing;
    const el = render(item);
    el.dataset.key = k;
    el.dataset.sig = sig;
    return el;
  });
  const same = rows.length === container.children.length && rows.every((el, i) => container.children[i] === el);
  if (!same) container.replaceChildren(...rows);
}

function matchesFilter(text) {
  return !state.filter || text.toLowerCase().includes(state.filter);
}

// ---- rendering -----------------------------------------------------------------------------

function renderStatus() {
  const status = state.sections.status;
  $("lattice").textContent = status.lattice || "…";
  $("nats-url").textContent = status.nats_url ? `· ${status.nats_url}` : "";
  document.title = `${status.lattice || "mlcloud"} · washboard`;
  renderBanner();
}

function staleness() {
  const status = state.sections.status;
  const age = status.last_update ? now() - status.last_update : null;
  if (!state.streamOpen) return { kind: "offline", age };
  if (!status.connected) return { kind: "nats", age };
  if (age !== null && age > STALE_AFTER) return { kind: "stale", age };
  return { kind: "live", age };
}

function renderBanner() {
  const { kind, age } = staleness();
  const status = state.sections.status;
  const banner = $("banner");
  const conn = $("conn");
  const old = age === null ? "no data yet" : `data is ${Math.round(age)} s stale`;
  let text = "";
  if (kind === "offline") text = `The washboard server is unreachable — ${old}. Reconnecting…`;
  else if (kind === "nats") text = `NATS is away${status.error ? ` (${status.error})` : ""} — ${old}. Reconnecting…`;
  else if (kind === "stale") text = `No answer from the lattice — ${old}.`;
  banner.hidden = kind === "live";
  banner.textContent = text;
  banner.className = `banner ${kind}`;
  $("main").classList.toggle("stale", kind !== "live");
  conn.className = `pill ${kind}`;
  conn.textContent = kind === "live" ? "live" : kind === "stale" ? `stale ${Math.round(age)} s` : "reconnecting…";
  conn.title = status.last_update ? `last update ${new Date(status.last_update * 1000).toLocaleTimeString()}` : "";
}

function renderHosts() {
  const hosts = state.sections.hosts;
  const box = $("hosts");
  if (!hosts.length) {
    box.replaceChildren(h("p", { class: "empty-note" }, "No host answers on this lattice yet."));
  } else {
    patchRows(box, hosts.filter((x) => matchesFilter(JSON.stringify(x))), (x) => x.id, (host) =>
      h("article", { class: `card host ${host.status}`, dataset: { host: host.id } },
        h("header", {},
          h("div", { class: "ident" },
            h("span", { class: "name" }, (host.labels && host.labels.hostname) || "host"),
            h("code", { class: "key", title: host.id, onclick: () => copy(host.id) }, short(host.id, 14))),
          h("div", { class: "badges" },
            host.dev ? h("span", { class: "badge dev", title: "started with --dev: runs unsigned local component folders" }, "dev mode") : null,
            badge(host.status === "up" ? "up" : "missing"))),
        h("div", { class: "labels" }, Object.entries(host.labels || {}).filter(([k]) => k !== "hostname")
          .map(([k, v]) => chip(`${k}=${v}`))),
        h("dl", { class: "facts" },
          h("div", {}, h("dt", {}, "uptime"), h("dd", { class: "uptime" }, since(host.started_at))),
          h("div", {}, h("dt", {}, "heartbeat"), h("dd", { class: "heartbeat" }, ago(host.last_heartbeat))),
          h("div", {}, h("dt", {}, "version"), h("dd", {}, host.version || "–")),
          h("div", {}, h("dt", {}, "runs"), h("dd", {},
            `${host.actor_instances} actor instance${host.actor_instances === 1 ? "" : "s"}, ${host.providers} provider${host.providers === 1 ? "" : "s"}`)))));
  }
  const up = hosts.filter((x) => x.status === "up").length;
  $("sum-hosts").textContent = hosts.length;
  $("sum-hosts-sub").textContent = hosts.length === up ? "all answering" : `${hosts.length - up} missing`;
}

function renderActors() {
  const actors = state.sections.actors;
  const tbody = $("actors").tBodies[0];
  if (!actors.length) emptyRow("actors", 7, "No actors run on this lattice.");
  else patchRows(tbody, actors.filter((a) => matchesFilter(JSON.stringify(a))), (a) => a.id + hostNamesSig(), (actor) =>
    h("tr", { dataset: { id: actor.id, name: actor.name } },
      td("Actor", keyCell(actor.name, actor.id, actor.version ? `v${actor.version}` + (actor.revision ? ` r${actor.revision}` : "") : "")),
      td("Image", h("div", { class: "image" },
        h("span", { class: "ref", title: actor.image_ref }, actor.image_ref || "–"),
        actor.digest ? h("code", { class: "digest", title: actor.digest }, short(actor.digest, 19)) : null)),
      td("Capabilities", h("div", { class: "chips" }, (actor.capabilities || []).map((c) => chip(c, "cap")))),
      td("Instances", h("div", { class: "instances" },
        h("b", { class: "count" }, actor.instances),
        actor.hosts.map((x) => h("span", { class: "per-host" }, `${x.count} on ${hostName(x.host_id)}`)))),
      td("Status", h("div", { class: "status" }, badge(actor.status, instanceSummary(actor.hosts.flatMap((x) => x.instances)) ), ago(actor.status_since))),
      h("td", { "data-label": "Restarts", class: "num" }, actor.restarts),
      td("", h("button", { class: "btn small", type: "button", onclick: () => openScale(actor) }, "Scale…"))));
  const instances = actors.reduce((n, a) => n + a.instances, 0);
  $("sum-actors").textContent = actors.length;
  $("sum-actors-sub").textContent = `${instances} instance${instances === 1 ? "" : "s"}` + unhealthyNote(actors);
}

function instanceSummary(instances) {
  return instances.map((i) => `${short(i.instance_id, 6)} pid ${i.pid ?? "–"}: ${i.status}`).join("\n");
}

function unhealthyNote(rows) {
  const bad = rows.filter((r) => r.status === "unhealthy").length;
  return bad ? `, ${bad} unhealthy` : "";
}

function renderProviders() {
  const providers = state.sections.providers;
  const tbody = $("providers").tBodies[0];
  if (!providers.length) emptyRow("providers", 7, "No providers run on this lattice.");
  else patchRows(tbody, providers.filter((p) => matchesFilter(JSON.stringify(p))), (p) => `${p.host_id}/${p.id}/${p.link_name}${hostNamesSig()}`, (p) => {
    const stopped = p.status === "stopped";
    return h("tr", { class: stopped ? "stopped" : "", dataset: { id: p.id, name: p.name, link: p.link_name, host: p.host_id } },
      td("Provider", keyCell(p.name, p.id, p.version ? `v${p.version}` : "")),
      td("Contract", chip(p.contract_id || "–", "cap")),
      td("Link", h("code", {}, p.link_name)),
      td("Host", h("span", { title: p.host_id }, hostName(p.host_id))),
      td("Status", h("div", { class: "status" }, badge(p.status, instanceSummary(p.instances)), ago(p.status_since))),
      h("td", { "data-label": "Restarts", class: "num restarts" }, p.restarts),
      td("", stopped
        ? h("button", { class: "btn small", type: "button", onclick: () => confirmStart(p) }, "Start…")
        : h("button", { class: "btn small danger", type: "button", onclick: () => confirmStop(p) }, "Stop…")));
  });
  const healthy = providers.filter((p) => p.status === "healthy").length;
  $("sum-providers").textContent = providers.length;
  $("sum-providers-sub").textContent = `${healthy} healthy` + unhealthyNote(providers);
}

function renderModels() {
  const models = state.sections.models;
  const tbody = $("models").tBodies[0];
  if (!models.length) emptyRow("models", 10, "No mlinference links: no models are served.");
  else patchRows(tbody, models.filter((m) => matchesFilter(JSON.stringify(m))), (m) => `${m.actor_id}/${m.link_name}/${m.name}`, (m) =>
    h("tr", { class: m.stale ? "stale-row" : "", dataset: { route: m.name || "", state: m.state } },
      td("Route", m.name ? h("code", { class: "route" }, `/${m.name}`) : "–"),
      td("Bindle id", m.bindle_id || "–"),
      td("Engine", m.engine || "–"),
      td("State", h("div", { class: "status" }, badge(m.state),
        m.reason ? h("span", { class: "reason" }, m.reason) : null,
        m.stale && m.stale_reason ? h("span", { class: "reason" }, `last answer ${duration(now() - m.updated_at)} ago; ${m.stale_reason}`) : null)),
      h("td", { "data-label": "Requests", class: "num" }, num(m.requests)),
      h("td", { "data-label": "Errors", class: `num ${m.errors ? "bad" : ""}` }, num(m.errors)),
      h("td", { "data-label": "p50", class: "num" }, m.requests ? num(m.p50_ms, " ms") : "–"),
      h("td", { "data-label": "p99", class: "num" }, m.requests ? num(m.p99_ms, " ms") : "–"),
      td("Served by", h("span", { class: "muted", title: `${m.provider_id} for ${m.actor_id}` },
        `${m.provider_name || short(m.provider_id)} · ${m.link_name}`)),
      td("", m.name ? h("div", { class: "actions" },
        h("button", { class: "btn small", type: "button", onclick: () => openLoad(m) }, "Load…"),
        h("button", { class: "btn small danger", type: "button", onclick: () => confirmUnload(m) }, "Unload…")) : null)));
  const ready = models.filter((m) => m.state === "READY").length;
  $("sum-models").textContent = models.filter((m) => m.name).length;
  $("sum-models-sub").textContent = `${ready} ready` + (models.length - ready ? `, ${models.length - ready} not` : "");
  document.dispatchEvent(new Event("models-rendered")); // the "Try a model" panel's routes (try.js)
}

// One row per arm of each split: its share of the traffic as a bar, its reward posterior as the
// mean and the 95 % credible interval drawn on a 0..1 scale.
function renderExperiments() {
  const { splits = [], error = "" } = state.sections.experiments || {};
  const arms = splits.flatMap((e) => e.arms.map((a) => ({ ...a, split: e.route, policy: e.policy })));
  const tbody = $("experiments").tBodies[0];
  if (!arms.length) emptyRow("experiments", 8, error || "No split routes.");
  else patchRows(tbody, arms.filter((a) => matchesFilter(JSON.stringify(a))), (a) => `${a.split}/${a.version}`, (a) =>
    h("tr", { dataset: { split: a.split, version: a.version } },
      td("Route", h("code", { class: "route" }, `/${a.split}`)),
      td("Policy", chip(a.policy)),
      td("Version", h("code", {}, a.version)),
      h("td", { "data-label": "Weight", class: "num" }, a.policy === "fixed" ? percent(a.weight) : "–"),
      td("Traffic share", h("div", { class: "meter", title: `${a.requests} requests in the last minute` },
        h("span", { class: "fill share", style: `width:${(a.share || 0) * 100}%` }),
        h("span", { class: "meter-text share-text" }, a.share === null ? "–" : percent(a.share)))),
      h("td", { "data-label": "Rewards", class: "num rewards" }, String(a.rewards)),
      h("td", { "data-label": "Reward mean", class: "num mean" }, a.mean.toFixed(3)),
      td("95 % credible interval", h("div", { class: "meter", title: `Beta(${num(a.alpha)}, ${num(a.beta)})` },
        h("span", { class: "fill interval", style: `left:${a.low * 100}%;width:${(a.high - a.low) * 100}%` }),
        h("span", { class: "mark", style: `left:${a.mean * 100}%` }),
        h("span", { class: "meter-text interval-text" }, `${a.low.toFixed(3)} – ${a.high.toFixed(3)}`)))));
  $("experiments-error").hidden = !(error && arms.length);
  $("experiments-error").textContent = error ? `The api did not answer (${error}); showing its last report.` : "";
}

function percent(value) {
  return `${(value * 100).toFixed(1)} %`;
}

function renderLinks() {
  const links = state.sections.links;
  const tbody = $("links").tBodies[0];
  if (!links.length) emptyRow("links", 6, "No link definitions.");
  else patchRows(tbody, links.filter((l) => matchesFilter(JSON.stringify(l))), (l) => `${l.actor_id}/${l.contract_id}/${l.link_name}`, (l) =>
    h("tr", { dataset: { actor: l.actor_id, provider: l.provider_id, contract: l.contract_id } },
      td("Actor", keyCell(l.actor_name, l.actor_id)),
      h("td", { class: "arrow", "aria-hidden": "true" }, "→"),
      td("Provider", keyCell(l.provider_name, l.provider_id)),
      td("Contract", chip(l.contract_id, "cap")),
      td("Link", h("code", {}, l.link_name)),
      td("Values", h("div", { class: "values" }, Object.keys(l.values || {}).length
        ? Object.entries(l.values).sort().map(([k, v]) =>
          h("span", { class: "kv" }, h("span", { class: "k" }, k), h("span", { class: v === "••••••" ? "v masked" : "v" }, String(v))))
        : h("span", { class: "muted" }, "none")))));
  $("sum-links").textContent = links.length;
  const contracts = new Set(links.map((l) => l.contract_id));
  $("sum-links-sub").textContent = `${contracts.size} contract${contracts.size === 1 ? "" : "s"}`;
}

const FEED_CLASSES = [
  [/failed|refused|deleted/, "bad"], [/stopped/, "off"], [/restarted/, "warn"],
  [/started|passed|loaded/, "good"], [/linkdef|model/, "info"],
];

function feedDetail(event) {
  const d = event.data || {};
  const parts = [];
  if (d.name) parts.push(d.name);
  if (d.link_name && d.link_name !== "default") parts.push(`link ${d.link_name}`);
  if (d.contract_id && event.name.startsWith("linkdef")) parts.push(`${short(d.actor_id)} → ${short(d.provider_id)} ${d.contract_id}`);
  if (d.image_ref) parts.push(d.image_ref);
  if (d.reason && d.reason !== "ready") parts.push(d.reason);
  if (d.restarts) parts.push(`restart #${d.restarts}`);
  if (d.model) parts.push(d.model);
  if (!parts.length && d.host_id) parts.push(`host ${short(d.host_id)}`);
  return parts.join(" · ");
}

function renderFeed() {
  const list = $("feed");
  const events = state.feed.slice(-100).reverse().filter((e) => matchesFilter(JSON.stringify(e)));
  if (!events.length) {
    list.replaceChildren(h("li", { class: "empty-note" }, "No events since the washboard started."));
  } else {
    patchRows(list, events, (e) => String(e.seq), (e) => {
      const cls = (FEED_CLASSES.find(([re]) => re.test(e.name)) || [null, ""])[1];
      return h("li", { class: `event ${cls}`, dataset: { name: e.name } },
        h("time", { title: new Date(e.time * 1000).toLocaleString() }, new Date(e.time * 1000).toLocaleTimeString()),
        h("span", { class: "event-name" }, e.name.replaceAll("_", " ")),
        h("span", { class: "event-detail" }, feedDetail(e)));
    });
  }
  $("feed-count").textContent = state.feed.length ? `(${state.feed.length})` : "";
}

const RENDERERS = {
  status: renderStatus, hosts: () => { renderHosts(); renderActors(); renderProviders(); },
  actors: renderActors, providers: renderProviders, links: renderLinks, models: renderModels,
  experiments: renderExperiments,
};

function renderAll() {
  renderStatus(); renderHosts(); renderActors(); renderProviders(); renderModels(); renderExperiments(); renderLinks();
  renderFeed();
}

// Relative times and the staleness banner move on by themselves, between updates.
function tick() {
  for (const el of document.querySelectorAll(".ago[data-at]")) {
    const at = parseFloat(el.dataset.at);
    if (at) el.textContent = duration(now() - at) + el.dataset.suffix;
  }
  renderBanner();
}

// ---- the live stream -----------------------------------------------------------------------

function apply(message, full) {
  state.clockOffset = message.server_time - Date.now() / 1000;
  state.lastMessage = Date.now();
  if (full) {
    Object.assign(state.sections, message.sections);
    state.feed = message.feed || [];
    renderAll();
    return;
  }
  const changed = Object.keys(message.sections || {});
  Object.assign(state.sections, message.sections);
  const done = new Set();
  for (const name of changed) {
    const render = RENDERERS[name];
    if (render && !done.has(render)) { render(); done.add(render); }
  }
  if (message.feed && message.feed.length) {
    state.feed = state.feed.concat(message.feed).slice(-200);
    renderFeed();
  }
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("snapshot", (e) => { state.streamOpen = true; apply(JSON.parse(e.data), true); });
  source.addEventListener("update", (e) => apply(JSON.parse(e.data), false));
  source.addEventListener("error", () => {
    state.streamOpen = false;
    renderBanner();
    // EventSource retries by itself unless the server answered with an error status.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  });
}

// ---- actions -------------------------------------------------------------------------------

// Actions need the token `mlcloud up` prints in the page's address as #token=…: a fragment never
// reaches a server (no log, no Referer). Keep it for this origin and clear the address bar.
const TOKEN_KEY = "mlcloud-washboard-token";

function takeToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", location.pathname + location.search);
}

async function post(url, body) {
  const headers = { "Content-Type": "application/json" };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  let data = {};
  try { data = await response.json(); } catch { /* not JSON: reported below */ }
  if (!response.ok) {
    const err = data.error || {};
    throw new Error(`${err.kind || response.status}: ${err.message || response.statusText}`);
  }
  return data;
}

let dialogAction = null;

function openDialog({ title, body, confirm, danger, action }) {
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...body);
  $("dialog-error").hidden = true;
  const button = $("dialog-confirm");
  button.textContent = confirm;
  button.className = `btn ${danger ? "danger" : "primary"}`;
  button.disabled = false;
  dialogAction = action;
  $("dialog").showModal();
}

async function runDialogAction(event) {
  event.preventDefault();
  if (!dialogAction) return;
  const button = $("dialog-confirm");
  button.disabled = true;
  button.classList.add("busy");
  try {
    const message = await dialogAction();
    $("dialog").close();
    toast(message);
  } catch (err) {
    $("dialog-error").textContent = err.message;
    $("dialog-error").hidden = false;
  } finally {
    button.disabled = false;
    button.classList.remove("busy");
  }
}

function openScale(actor) {
  const hosts = state.sections.hosts.map((x) => x.id);
  const current = (hostId) => (actor.hosts.find((x) => x.host_id === hostId) || { count: 0 }).count;
  const select = h("select", { id: "scale-host", name: "host" }, hosts.map((id) =>
    h("option", { value: id, selected: actor.hosts.length && actor.hosts[0].host_id === id }, `${hostName(id)} — ${current(id)} now`)));
  const count = h("input", { id: "scale-count", name: "count", type: "number", min: 0, max: 64, required: true, value: current(select.value || hosts[0]) });
  select.addEventListener("change", () => { count.value = current(select.value); });
  openDialog({
    title: `Scale actor ${actor.name}`,
    body: [
      h("p", {}, "Set how many instances of ", h("b", {}, actor.name), " run on the host. ",
        "Scaling to 0 stops the actor there; calls to it fail until it runs again."),
      h("label", {}, "Host", select),
      h("label", {}, "Instances", count),
    ],
    confirm: "Scale",
    action: async () => {
      const n = parseInt(count.value, 10);
      await post(`/api/actors/${encodeURIComponent(actor.id)}/scale`, { host_id: select.value, count: n });
      return `${actor.name}: ${n} instance${n === 1 ? "" : "s"} on ${hostName(select.value)}`;
    },
  });
  count.focus();
  count.select();
}

// Load and unload go through the model repository operations, as /v2/repository and `mlcloud ctl model` do.
function repositoryBody(m, extra) {
  return { actor_id: m.actor_id, provider_id: m.provider_id, link_name: m.link_name, ...extra };
}

function openLoad(m) {
  const route = h("input", { id: "load-route", name: "route", required: true, value: m.name });
  const bindle = h("input", { id: "load-bindle", name: "bindle", placeholder: m.bindle_id });
  openDialog({
    title: "Load a model",
    body: [
      h("p", {}, "Serve a route of ", h("b", {}, `${m.provider_name || short(m.provider_id)} · ${m.link_name}`),
        ". The new bindle loads while the old one keeps serving; the route switches once it is ready. ",
        "Leave the bindle empty to load the route's own, or the newest bindle named like the route."),
      h("label", { for: "load-route" }, "Route"), route,
      h("label", { for: "load-bindle" }, "Bindle id (name/version)"), bindle,
    ],
    confirm: "Load",
    action: async () => {
      const body = repositoryBody(m, bindle.value.trim() ? { bindle_id: bindle.value.trim() } : {});
      const data = await post(`/api/models/${encodeURIComponent(route.value.trim())}/load`, body);
      const [done] = data.result;
      return `/${done.name} serves ${done.bindle_id}`;
    },
  });
}

function confirmUnload(m) {
  openDialog({
    title: `Unload /${m.name}?`,
    body: [h("p", {}, "Stop serving ", h("b", {}, `/${m.name}`), ` (${m.bindle_id}). `,
      "Requests to it get 404 until it is loaded again or its link's value changes.")],
    confirm: "Unload",
    danger: true,
    action: async () => {
      await post(`/api/models/${encodeURIComponent(m.name)}/unload`, repositoryBody(m, {}));
      return `/${m.name} unloaded`;
    },
  });
}

function confirmStop(p) {
  openDialog({
    title: `Stop provider ${p.name}?`,
    body: [h("p", {}, "Stop ", h("b", {}, p.name), ` (link ${p.link_name}) on ${hostName(p.host_id)}. `,
      "Actors linked to it get errors until it is started again; the washboard keeps it listed so you can start it.")],
    confirm: "Stop provider",
    danger: true,
    action: async () => {
      await post(`/api/providers/${encodeURIComponent(p.id)}/stop`, { host_id: p.host_id, link_name: p.link_name });
      return `${p.name} stopped`;
    },
  });
}

function confirmStart(p) {
  const config = Object.keys(p.config || {}).length ? JSON.stringify(p.config) : "none";
  openDialog({
    title: `Start provider ${p.name}?`,
    body: [
      h("p", {}, "Start ", h("b", {}, p.name), ` (link ${p.link_name}) on ${hostName(p.host_id)} again, as it last ran.`),
      h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "reference"), h("dd", {}, h("code", {}, p.image_ref || "–"))),
        h("div", {}, h("dt", {}, "config"), h("dd", {}, h("code", {}, config)))),
    ],
    confirm: "Start provider",
    action: async () => {
      await post(`/api/providers/${encodeURIComponent(p.id)}/start`, { host_id: p.host_id, link_name: p.link_name });
      return `${p.name} started`;
    },
  });
}

function toast(text, cls = "") {
  const el = h("div", { class: `toast ${cls}` }, text);
  $("toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

// ---- start ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  takeToken();
  window.addEventListener("hashchange", takeToken); // the printed address pasted into an open page
  $("dialog-form").addEventListener("submit", runDialogAction);
  $("dialog-cancel").addEventListener("click", () => $("dialog").close());
  $("filter").addEventListener("input", (e) => { state.filter = e.target.value.trim().toLowerCase(); renderAll(); });
  renderAll();
  connect();
  setInterval(tick, 1000);
});
