// hass status page: reads the JSON API with the user's bearer token, every second.
// Everything the API returns is put into the page as text (never as HTML).
"use strict";

const KEY = "hass-token";
const EVENT_TYPES = new Set(["detect", "recovered", "gave-up", "alert"]);
const KEEP = 200; // recent events shown
let events = [];  // detections, recoveries, give-ups and alerts, oldest first
let lastSeq = 0;
let busy = false;

function token() { return sessionStorage.getItem(KEY) || ""; }

// A token may come in the URL's fragment (never sent to the server): #token=...
function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=(.+)$/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class Refused extends Error {}

async function api(path) {
  const headers = {"Accept": "application/json"};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const r = await fetch(path, {headers, cache: "no-store"});
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (r.status === 401 || r.status === 403) {
    const msg = body && body.error ? body.error.message : r.statusText;
    throw new Refused(`${r.status}: ${msg}`);
  }
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : r.statusText;
    throw new Error(`${path}: ${r.status} ${msg}`);
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = document.createElement("td"); td.appendChild(c); tr.appendChild(td); }
    else tr.appendChild(el("td", c));
  }
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function fill(id, rows) {
  const tb = document.querySelector(`#${id} tbody`);
  tb.replaceChildren(...rows);
}

function state(s) { return el("span", s, "state-" + s); }

function since(a, b) {
  if (!a || !b) return "";
  const ms = new Date(b) - new Date(a);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function when(t) {
  const d = new Date(t);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

async function loadEvents() {
  for (let page = 0; page < 50; page++) {
    const p = await api(`/v1/events?after=${lastSeq}&limit=1000`);
    const got = p.events || [];
    for (const e of got) if (EVENT_TYPES.has(e.type)) events.push(e);
    if (p.last_seq) lastSeq = Math.max(lastSeq, p.last_seq);
    else if (got.length) lastSeq = got[got.length - 1].seq;
    if (got.length < 1000) break;
  }
  if (events.length > 5000) events = events.slice(-5000);
}

function renderEvents() {
  const recent = events.slice(-KEEP).reverse();
  fill("events", recent.map(e => row([
    when(e.at), e.type, e.vm || "", e.host || "", e.kind || "",
    e.type === "recovered" ? since(e.fault_at, e.detect_at) : "",
    e.type === "recovered" ? since(e.fault_at, e.recovered_at) : "",
    Object.assign(el("span", e.msg), {}),
  ], {"class": e.type, "data-type": e.type, "data-vm": e.vm || "", "data-kind": e.kind || "", "data-seq": e.seq})));
  const alerts = events.filter(e => e.type === "alert" || e.type === "gave-up").slice(-10).reverse();
  const ul = document.getElementById("alerts");
  ul.replaceChildren(...(alerts.length ? alerts.map(e => el("li", `${when(e.at)} ${e.vm || e.host || ""}: ${e.msg}`)) : [el("li", "none", "muted")]));
}

// The chart: recoveries per minute over the last hour.
function renderChart() {
  const svg = document.getElementById("chart");
  const ns = "http://www.w3.org/2000/svg";
  const now = Date.now(), span = 60, width = 600, height = 100;
  const bins = new Array(span).fill(0);
  for (const e of events) {
    if (e.type !== "recovered") continue;
    const age = Math.floor((now - new Date(e.recovered_at || e.at)) / 60000);
    if (age >= 0 && age < span) bins[span - 1 - age]++;
  }
  const max = Math.max(1, ...bins);
  const kids = [];
  bins.forEach((n, i) => {
    if (!n) return;
    const r = document.createElementNS(ns, "rect");
    const h = Math.max(2, (n / max) * height);
    r.setAttribute("x", i * (width / span) + 1);
    r.setAttribute("y", height - h);
    r.setAttribute("width", width / span - 2);
    r.setAttribute("height", h);
    const t = document.createElementNS(ns, "title");
    t.textContent = `${n} recover${n === 1 ? "y" : "ies"}, ${span - 1 - i} min ago`;
    r.appendChild(t);
    kids.push(r);
  });
  for (const [x, label] of [[2, "-60 min"], [width - 30, "now"]]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", 115); t.textContent = label;
    kids.push(t);
  }
  svg.replaceChildren(...kids);
  svg.dataset.recoveries = String(bins.reduce((a, b) => a + b, 0));
  document.getElementById("chart-range").textContent = `(per minute, last hour; most ${max})`;
}

function showError(msg, refused) {
  const e = document.getElementById("error");
  e.textContent = msg;
  e.hidden = false;
  document.body.dataset.state = refused ? "refused" : "error";
  if (refused) {
    // Without a valid token nothing of the cluster stays on the page.
    fill("hosts", []); fill("vms", []); fill("events", []);
    events = []; lastSeq = 0;
    document.getElementById("summary").textContent = "not signed in";
  }
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    if (!token()) throw new Refused("no token: paste an API token (hass token create NAME --role viewer)");
    const [st, hosts, vms] = await Promise.all([api("/v1/status"), api("/v1/hosts"), api("/v1/vms")]);
    await loadEvents();
    document.getElementById("summary").textContent =
      `${st.vms} protected: ${st.healthy} healthy, ${st.recovering} recovering, ${st.error} in error, ${st.operating} in an operation · ` +
      `${st.hosts_up}/${st.hosts} hosts up · leader ${st.leader || "?"} (term ${st.term}) · ${st.version}`;
    fill("hosts", (hosts.hosts || []).map(h => row([h.name, h.cluster, state(h.state), h.lease, h.libvirt, h.power || "", h.vms, h.maintenance ? "yes" : ""],
      {"data-host": h.name, "data-state": h.state})));
    fill("vms", (vms.vms || []).map(v => row([v.name, v.host, state(v.state), v.desired, v.observed, v.failure || "", v.restarts,
      v.operation ? `${v.operation.op} (${v.operation.phase})` : ""], {"data-vm": v.name, "data-state": v.state})));
    renderEvents();
    renderChart();
    document.getElementById("error").hidden = true;
    document.body.dataset.state = "ok";
    document.body.dataset.updated = new Date().toISOString();
  } catch (e) {
    showError(e.message, e instanceof Refused);
  } finally {
    busy = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  document.getElementById("login").addEventListener("submit", ev => {
    ev.preventDefault();
    const t = document.getElementById("token").value.trim();
    if (t) sessionStorage.setItem(KEY, t);
    document.getElementById("token").value = "";
    events = []; lastSeq = 0;
    refresh();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    refresh();
  });
  window.addEventListener("hashchange", () => { takeTokenFromFragment(); events = []; lastSeq = 0; refresh(); });
  refresh();
  setInterval(refresh, 1000);
});
