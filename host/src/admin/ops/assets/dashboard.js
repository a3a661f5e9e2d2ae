// Hookwall dashboard: polls the admin API and /metrics with the bearer token, renders tables.
// No framework and no build step; every value is inserted as text, never as HTML.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh")) || 2000;
const TOKEN_KEY = "hookwall-admin-token";
let token = null;
let previous = null; // { at: ms, samples } of the last scrape, for rates
let timer = null;

function takeToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, hash.get("token"));
    // Out of the address bar (and so out of history and screenshots).
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  // The admin listener refuses a state-changing request that is not JSON, even without a body.
  const method = (options.method || "GET").toUpperCase();
  if (method !== "GET" && method !== "HEAD") headers["Content-Type"] = "application/json";
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) throw new Unauthorized();
  return resp;
}

async function json(path) {
  const resp = await api(path);
  const body = await resp.json();
  if (!resp.ok) throw new Error(path + ": " + (body.message || resp.status));
  return body;
}

// --- Prometheus text format (the subset /metrics produces) ---------------------------------

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function sum(samples, name, match = {}) {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

function labelValues(samples, name, label) {
  const out = new Set();
  for (const s of samples) if (s.name === name && s.labels[label] !== undefined) out.add(s.labels[label]);
  return [...out].sort();
}

// Like PromQL's histogram_quantile: linear interpolation inside the bucket holding rank q.
function quantile(q, samples, name, match) {
  const buckets = samples
    .filter((s) => s.name === name + "_bucket" && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1].count;
  if (!total) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket ? lower + (b.le - lower) * ((rank - below) / inBucket) : b.le;
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}

function rate(now, name, match) {
  if (!previous) return null;
  const dt = (now.at - previous.at) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, sum(now.samples, name, match) - sum(previous.samples, name, match)) / dt;
}

// --- formatting ----------------------------------------------------------------------------

const pct = (num, den) => (den ? ((100 * num) / den).toFixed(1) + " %" : "–");
const perSec = (r) => (r === null ? "–" : r.toFixed(r < 10 ? 2 : 0));
function seconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 1 ? (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms" : s.toFixed(2) + " s";
}
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "–");

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows, empty) {
  const body = document.querySelector("#" + tableId + " tbody");
  const cols = document.querySelectorAll("#" + tableId + " thead th").length;
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "muted");
    td.colSpan = cols;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const r of rows) body.append(r);
}

function row(cells, attrs = {}) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs)) tr.setAttribute(k, v);
  tr.append(...cells);
  return tr;
}

function say(text) {
  document.getElementById("message").textContent = text;
}

// --- sections ------------------------------------------------------------------------------

const ACKED = ["accepted", "duplicate", "dropped", "responded"];

function renderSources(now) {
  const s = now.samples;
  const sources = labelValues(s, "hookwall_requests_total", "source");
  fill("sources", sources.map((source) => {
    const n = (outcome) => sum(s, "hookwall_requests_total", { source, outcome });
    const total = sum(s, "hookwall_requests_total", { source });
    const acked = ACKED.reduce((a, o) => a + n(o), 0);
    const success = pct(acked, total);
    return row([
      cell(source),
      cell(perSec(rate(now, "hookwall_requests_total", { source })), "num"),
      cell(success, total && acked / total < 0.95 ? "num bad" : "num"),
      cell(n("accepted"), "num"),
      cell(n("duplicate"), "num"),
      cell(n("dead_lettered"), n("dead_lettered") ? "num bad" : "num"),
      cell(n("unauthorized") + n("forbidden"), "num"),
      cell(n("rejected"), "num"),
      cell(n("rate_limited") + " / " + n("overloaded"), "num"),
    ], { "data-source": source });
  }), "no requests yet");
}

function renderSinks(now, sinks) {
  const s = now.samples;
  const haveDelivery = s.some((x) => x.name === "hookwall_delivery_attempts_total");
  document.getElementById("sinks-note").textContent = haveDelivery
    ? "Latency: received → confirmed, since start."
    : "No delivery metrics yet (nothing attempted since start).";
  fill("sinks", sinks.map((sink) => {
    const ok = sum(s, "hookwall_delivery_attempts_total", { sink: sink.name, result: "success" });
    const all = sum(s, "hookwall_delivery_attempts_total", { sink: sink.name });
    const first = sum(s, "hookwall_delivery_first_attempt_total", { sink: sink.name, result: "success" });
    const firstAll = sum(s, "hookwall_delivery_first_attempt_total", { sink: sink.name });
    const open = sum(s, "hookwall_sink_circuit_open", { sink: sink.name });
    const latency = (q) => quantile(q, s, "hookwall_delivery_latency_seconds", { sink: sink.name });
    return row([
      cell(sink.name),
      cell(perSec(rate(now, "hookwall_delivery_attempts_total", { sink: sink.name, result: "success" })), "num"),
      cell(pct(ok, all), all && ok / all < 0.9 ? "num bad" : "num"),
      cell(pct(first, firstAll), "num"),
      cell(seconds(latency(0.5)), "num"),
      cell(seconds(latency(0.99)), "num"),
      cell(sink.pending, "num"),
      cell(open ? "open" : "closed", open ? "bad" : "good"),
    ], { "data-sink": sink.name });
  }), "no sinks");
}

function renderDeadLetters(letters) {
  fill("dead-letters", letters.map((l) => {
    const button = document.createElement("button");
    button.className = "replay";
    button.textContent = "Replay";
    button.addEventListener("click", () => replay(l.seq, button));
    const action = document.createElement("td");
    action.append(button);
    return row([
      cell(l.seq, "num"),
      cell(l.event_id),
      cell(l.source),
      cell(l.sink),
      cell(l.reason, "reason"),
      cell(when(l.at_ms)),
      action,
    ], { "data-seq": String(l.seq), "data-event-id": l.event_id });
  }), "the dead-letter queue is empty");
}

function deliverySummary(e) {
  return e.deliveries.map((d) => d.sink + ": " + d.state + (d.attempts ? " (" + d.attempts + " attempts)" : "")).join(", ");
}

function renderEvents(tableId, events, empty) {
  fill(tableId, events.map((e) => row(
    tableId === "failures"
      ? [cell(e.id), cell(e.source), cell(when(e.received_at_ms)),
         cell(e.reason || e.deliveries.map((d) => d.last_error).filter(Boolean).join("; "), "reason")]
      : [cell(e.id), cell(e.source), cell(when(e.received_at_ms)),
         cell(e.status, "status status-" + e.status), cell(deliverySummary(e))],
    { "data-event-id": e.id, "data-status": e.status },
  )), empty);
}

function renderPlugins(plugins) {
  fill("plugins", plugins.map((p) => row([
    cell(p.name),
    cell(p.version),
    cell((p.sources || []).join(", ") || "–"),
    cell(when(p.loaded_at_ms)),
    cell(p.load_errors, p.load_errors ? "num bad" : "num"),
    cell(p.last_error, p.last_error ? "bad reason" : "reason"),
  ], { "data-plugin": p.name })), "no plugins");
}

async function replay(seq, button) {
  button.disabled = true;
  try {
    const resp = await api("/api/v1/replay", {
      method: "POST",
      body: JSON.stringify({ seq }),
    });
    const body = await resp.json();
    say(resp.ok ? "replayed " + body.replayed + " dead letter(s)" : "replay failed: " + (body.message || resp.status));
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    say("replay failed: " + e.message);
  }
  refresh();
}

// --- loop ----------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  try {
    const [metricsResp, sinks, letters, failures, events, plugins] = await Promise.all([
      api("/metrics"),
      json("/api/v1/sinks"),
      json("/api/v1/dead-letters?limit=50"),
      json("/api/v1/events?status=failed&limit=10"),
      json("/api/v1/events?limit=20"),
      json("/api/v1/plugins"),
    ]);
    const now = { at: Date.now(), samples: metricsResp.ok ? parseMetrics(await metricsResp.text()) : [] };
    renderSources(now);
    renderSinks(now, sinks.sinks);
    renderDeadLetters(letters.dead_letters);
    renderEvents("failures", failures.events, "no failures");
    renderEvents("events", events.events, "no events yet");
    renderPlugins(plugins.plugins);
    previous = now;
    document.getElementById("main").hidden = false;
    document.getElementById("login").hidden = true;
    document.getElementById("updated").textContent = "updated " + new Date(now.at).toLocaleTimeString() +
      (metricsResp.ok ? "" : " (metrics disabled)");
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    document.getElementById("updated").textContent = "refresh failed: " + e.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showLogin() {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("token").focus();
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  refresh();
});

token = takeToken();
refresh();
