"""The dashboard: one self-contained HTML page (inline CSS and JS, nothing fetched from elsewhere).

Balancers often sit where nothing but the admin network is reachable, so the page loads no CDN, font
or image. It reads `/api/stream` (server-sent events, parsed from a fetch() body because EventSource
cannot send the Authorization header a non-loopback admin address needs), computes rates from
successive snapshots, and posts operator changes with the token it asked for once (kept in
sessionStorage: gone when the tab closes).

The Content-Security-Policy allows exactly this page's script and style (by hash) and same-origin
fetches; frame-ancestors 'none' stops another site from framing the Drain/Maint buttons.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

__all__ = ["HEADERS", "PAGE"]

_STYLE: Final = """
:root { --up: #2e7d32; --drain: #d58a00; --maint: #8a8f98; --down: #c62828; --init: #5c6bc0;
        --bg: #f6f7f9; --fg: #1d2330; --muted: #5f6b7a; --line: #dde1e7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       background: var(--bg); color: var(--fg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px; background: #1d2330;
         color: #fff; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header .ns { font-weight: 600; }
header .live { margin-left: auto; font-size: 12px; }
header .live::before { content: "●"; margin-right: 4px; color: var(--down); }
header .live.on::before { color: #4caf50; }
main { padding: 16px 20px; }
.summary { display: flex; gap: 10px; flex-wrap: wrap; margin-bottom: 14px; }
.summary div { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; }
.summary b { display: block; font-size: 18px; }
.summary span { color: var(--muted); font-size: 12px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { padding: 5px 7px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #eef0f4; font-size: 12px; color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.server { font-weight: 600; }
td.server small { display: block; font-weight: 400; color: var(--muted); font-size: 11px; }
td.operator small { display: block; color: var(--muted); font-size: 11px; max-width: 12em;
                    overflow: hidden; text-overflow: ellipsis; }
td.actions { white-space: nowrap; }
td.cell { color: #fff; text-align: center; min-width: 56px; font-weight: 600; }
td.cell small { display: block; font-weight: 400; font-size: 11px; opacity: .9; }
.state-up, .state-ready { background: var(--up); }
.state-drain { background: var(--drain); }
.state-maint { background: var(--maint); }
.state-down { background: var(--down); }
.state-init { background: var(--init); }
span.badge { color: #fff; border-radius: 4px; padding: 1px 7px; font-size: 12px; font-weight: 600; }
button { font: inherit; font-size: 12px; padding: 3px 9px; margin-right: 3px; border-radius: 4px;
         border: 1px solid #aab2bd; background: #fff; cursor: pointer; }
button:hover { background: #eef0f4; }
button.drain { border-color: var(--drain); }
button.maint { border-color: var(--maint); }
button.ready { border-color: var(--up); }
.legend { margin: 8px 0 18px; color: var(--muted); font-size: 12px; }
.legend span.badge { margin: 0 4px 0 10px; }
#message { min-height: 20px; margin: 6px 0; font-weight: 600; }
#message.error { color: var(--down); }
#token-bar { display: none; background: #fff4e0; border: 1px solid var(--drain); border-radius: 6px;
             padding: 8px 12px; margin-bottom: 12px; }
#token-bar.open { display: block; }
#token-bar input { font: inherit; width: 320px; padding: 3px 6px; margin: 0 6px; }
h2 { font-size: 15px; margin: 18px 0 8px; }
#events td { font-size: 13px; }
#events td.when { color: var(--muted); font-variant-numeric: tabular-nums; }
"""

_SCRIPT: Final = """
"use strict";
const TOKEN_KEY = "casarray.token";
const $ = (id) => document.getElementById(id);
let rows = new Map();          // server -> {cells, operator, numbers}
let columns = "";              // the services the grid was built for
let previous = null;           // last snapshot, for rates
let pending = null;            // an action waiting for the token

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? {"Authorization": "Bearer " + token} : {};
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function message(text, error) {
  const box = $("message");
  box.textContent = text;
  box.className = error ? "error" : "";
}

function build(snap) {
  const head = $("grid-head");
  const body = $("grid-body");
  head.textContent = "";
  body.textContent = "";
  rows = new Map();
  const tr = el("tr");
  // The actions come right after the server's name: on a 1280 px screen the grid of nine services and
  // the counters is wider than the window, and buttons at the far right would need a scroll to reach.
  tr.append(el("th", {}, "Server"), el("th", {}, "Operator"), el("th", {}, ""));
  for (const service of snap.services) tr.append(el("th", {}, service));
  const rate = snap.mode === "l7" ? "req/s" : "conn/s";
  for (const name of ["Conns", "Total", rate, "Bytes in", "Bytes out", "Errors", "Check"]) {
    tr.append(el("th", {}, name));
  }
  head.append(tr);
  for (const server of snap.servers) {
    const row = el("tr", {"data-server": server.name});
    const name = el("td", {"class": "server"}, server.name);
    name.append(el("small", {}, server.address + ":" + server.port));
    const operator = el("td", {"class": "operator"});
    const actions = el("td", {"class": "actions"});
    for (const state of ["drain", "ready", "maint"]) {
      const button = el("button", {"class": state, "data-action": state, "type": "button"},
                        state[0].toUpperCase() + state.slice(1));
      button.addEventListener("click", () => act(server.name, state));
      actions.append(button);
    }
    row.append(name, operator, actions);
    const cells = new Map();
    for (const service of snap.services) {
      const cell = el("td", {"class": "cell", "data-service": service});
      cells.set(service, cell);
      row.append(cell);
    }
    const numbers = {};
    for (const key of ["active", "total", "rate", "bytes_in", "bytes_out", "connect_errors", "check"]) {
      numbers[key] = el("td", {"class": "num", "data-field": key});
      row.append(numbers[key]);
    }
    body.append(row);
    rows.set(server.name, {cells, operator, numbers});
  }
  columns = snap.services.join(",") + "|" + snap.servers.map((s) => s.name).join(",");
}

function render(snap) {
  if (columns !== snap.services.join(",") + "|" + snap.servers.map((s) => s.name).join(",")) build(snap);
  $("namespace").textContent = snap.namespace;
  $("mode").textContent = "mode " + snap.mode + (snap.workers > 1 ? ", " + snap.workers + " workers" : "");
  const classes = {};
  for (const byClass of Object.values(snap.requests)) {
    for (const [k, v] of Object.entries(byClass)) classes[k] = (classes[k] || 0) + v;
  }
  const summary = [
    ["clients", snap.clients], ["accepted", snap.clients_total], ["refused", snap.refused],
    ["queued", snap.queue], ["reloads", snap.reloads],
  ];
  for (const k of Object.keys(classes).sort()) summary.push([k, classes[k]]);
  const box = $("summary");
  box.textContent = "";
  for (const [label, value] of summary) {
    const item = el("div", {"data-field": label});
    item.append(el("b", {}, String(value)), el("span", {}, label));
    box.append(item);
  }
  const seconds = previous ? snap.time - previous.time : 0;
  const before = new Map((previous ? previous.servers : []).map((s) => [s.name, s]));
  for (const server of snap.servers) {
    const row = rows.get(server.name);
    row.operator.textContent = "";
    row.operator.append(el("span", {"class": "badge state-" + server.operator}, server.operator));
    // Who set it and why (kept across restarts): the reason under the badge, the rest in its title.
    if (server.operator_reason) row.operator.append(el("small", {}, server.operator_reason));
    row.operator.title = server.operator_by
      ? server.operator + " since " + new Date(server.operator_since * 1000).toLocaleString() +
        " by " + server.operator_by + (server.operator_reason ? ": " + server.operator_reason : "")
      : "";
    let slowest = 0;
    let requests = 0;
    for (const service of snap.services) {
      const member = server.members[service];
      const cell = row.cells.get(service);
      if (!member) { cell.textContent = ""; continue; }
      cell.className = "cell state-" + member.state;
      cell.textContent = member.state;
      // drain/maint colour the cell; a failing health under it still shows (a drained server may be down).
      const health = member.state !== member.health && member.health !== "up" ? member.health + " " : "";
      const check = member.code ? member.code + " " + member.check_ms.toFixed(0) + " ms" : "—";
      cell.append(el("small", {}, health + check));
      cell.title = member.service + " on " + server.name + ": health " + member.health +
                   (member.reason ? " (" + member.reason + ")" : "") + ", operator " + member.operator;
      slowest = Math.max(slowest, member.check_ms);
      requests += member.requests;
    }
    const old = before.get(server.name);
    let rate = "—";
    if (old && seconds > 0) {
      const count = (s) => snap.mode === "l7" ? Object.values(s.members).reduce((a, m) => a + m.requests, 0)
                                              : s.total;
      rate = Math.max(0, (count(server) - count(old)) / seconds).toFixed(1);
    }
    const n = row.numbers;
    n.active.textContent = server.active;
    n.total.textContent = server.total;
    n.rate.textContent = rate;
    n.bytes_in.textContent = bytes(server.bytes_in);
    n.bytes_out.textContent = bytes(server.bytes_out);
    n.connect_errors.textContent = server.connect_errors;
    n.check.textContent = slowest.toFixed(0) + " ms";
  }
  previous = snap;
}

function addEvent(event) {
  const body = $("events-body");
  const tr = el("tr");
  const when = new Date(event.time * 1000).toLocaleTimeString([], {hour12: false});
  const what = event.server ? event.server + (event.service ? "/" + event.service : "") : "config";
  tr.append(el("td", {"class": "when"}, when), el("td", {}, what),
            el("td", {}, event.old === event.new ? "still " + event.new : event.old + " → " + event.new),
            el("td", {}, event.code),
            el("td", {}, event.reason));
  body.prepend(tr);
  while (body.children.length > 200) body.lastChild.remove();
}

function askToken(retry) {
  pending = retry;
  $("token-bar").className = "open";
  $("token").focus();
}

async function act(server, state) {
  let response;
  try {
    response = await fetch("/api/servers/" + encodeURIComponent(server) + "/" + state,
                           {method: "POST", headers: {...authHeaders(), "Content-Type": "application/json"},
                            body: JSON.stringify({by: "dashboard"})});
  } catch (err) {
    message("cannot reach the balancer: " + err, true);
    return;
  }
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    message(data.error || "a token is required", true);
    askToken(() => act(server, state));
    return;
  }
  if (!response.ok) { message(data.error || ("HTTP " + response.status), true); return; }
  // With peers: each other node's answer; one that did not take the change shows as an error.
  const peers = data.peers || [];
  message([data.outcome, ...peers.map(p => p.node + ": " + p.outcome)].join(" · "), peers.some(p => !p.ok));
}

function frame(text) {
  let kind = "message";
  let data = "";
  for (const line of text.split("\\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const value = JSON.parse(data);
  if (kind === "snapshot") render(value);
  else if (kind === "event") addEvent(value);
}

async function connect() {
  try {
    const response = await fetch("/api/stream", {headers: authHeaders(), cache: "no-store"});
    if (response.status === 401 || response.status === 403) {
      const data = await response.json().catch(() => ({}));
      message(data.error || ("HTTP " + response.status), true);
      if (response.status === 401) { askToken(connect); return; }
    } else if (response.ok) {
      $("live").className = "live on";
      $("live").textContent = "live";
      $("events-body").textContent = "";  // the stream replays the recent history
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf("\\n\\n")) >= 0) {
          frame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    }
  } catch (err) {
    // network error or balancer restart: retry below
  }
  $("live").className = "live";
  $("live").textContent = "disconnected";
  previous = null;
  setTimeout(connect, 1000);
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("token-bar").className = "";
  message("");
  const retry = pending;
  pending = null;
  if (retry) retry();
});
connect();
"""

_BODY: Final = """
<header>
  <h1>casarray</h1><span class="ns" id="namespace"></span><span id="mode"></span>
  <span class="live" id="live">connecting</span>
</header>
<main>
  <div id="token-bar">
    <form id="token-form">This needs the admin token (admin.token_file):
      <input id="token" type="password" autocomplete="off" placeholder="token">
      <button type="submit" id="token-save">Use token</button>
    </form>
  </div>
  <div class="summary" id="summary"></div>
  <div id="message"></div>
  <div class="scroll">
    <table id="grid"><thead id="grid-head"></thead><tbody id="grid-body"></tbody></table>
  </div>
  <div class="legend">
    <span class="badge state-up">up</span>ready and healthy
    <span class="badge state-drain">drain</span>no new traffic, open connections finish
    <span class="badge state-maint">maint</span>out, connections closed
    <span class="badge state-down">down</span>failed its health check
    <span class="badge state-init">init</span>not checked yet
  </div>
  <h2>Recent state changes</h2>
  <table id="events">
    <thead><tr><th>Time</th><th>What</th><th>Change</th><th>Code</th><th>Reason</th></tr></thead>
    <tbody id="events-body"></tbody>
  </table>
</main>
"""

PAGE: Final = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>casarray</title><style>{_STYLE}</style></head>"
    f"<body>{_BODY}<script>{_SCRIPT}</script></body></html>\n"
)


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


HEADERS: Final = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
