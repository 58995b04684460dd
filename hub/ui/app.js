// walhub's status page: reads the hub's JSON API (GET v1/servers, then each
// server's status and backups) with the read token typed into the form, and
// redraws every few seconds. Everything is built with DOM calls and
// textContent, never from HTML strings: names and errors come from outside.
"use strict";

const TOKEN_KEY = "walhub.readToken";
const REFRESH_MS = 5000;
const SVGNS = "http://www.w3.org/2000/svg";

let refreshTimer = null;

class AuthError extends Error {}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svgEl(tag, attrs, title) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (title) {
    const t = document.createElementNS(SVGNS, "title");
    t.textContent = title;
    e.append(t);
  }
  return e;
}

// ---- formatting: sizes in binary units, times in the viewer's zone ----

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = Math.abs(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const s = i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1);
  return (n < 0 ? "-" : "") + s + " " + units[i];
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.floor(s % 60) + " s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + " h " + (m % 60) + " min";
  return Math.floor(h / 24) + " d " + (h % 24) + " h";
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const shortFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) ? "–" : timeFormat.format(d);
}

function ago(t, now) {
  if (!t) return "";
  return seconds(Math.max(0, (now - new Date(t)) / 1000)) + " ago";
}

// A segment name's number, from its log and segment parts.
function segNo(name, segSize) {
  const log = parseInt(name.slice(8, 16), 16), seg = parseInt(name.slice(16, 24), 16);
  return log * (4294967296 / segSize) + seg;
}

function badge(text, kind) { return el("span", { class: "badge " + (kind || ""), text }); }

function dl(rows) {
  const d = el("dl");
  for (const [k, v, attrs] of rows) {
    if (v === undefined) continue;
    d.append(el("dt", { text: k }), el("dd", attrs || {}, v));
  }
  return d;
}

// ---- the API ----

async function api(path) {
  const headers = {};
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) headers["Authorization"] = "Bearer " + t;
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (resp.status === 401) throw new AuthError("the token was refused");
  if (!resp.ok) {
    let msg = "HTTP " + resp.status;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + msg);
  }
  return resp.json();
}

// ---- one server ----

function receiverPart(doc) {
  const r = doc.receiver;
  const kind = r.running && r.state === "streaming" ? "ok" : r.running ? "warn" : "bad";
  const now = new Date(doc.generated_at);
  return el("div", { class: "receiver" },
    el("h3", { text: "Receiver" }),
    dl([
      ["state", el("span", {}, badge(r.state, kind), " ", r.running ? "running" : "not running: " + (r.not_running || ""))],
      ["durable LSN", r.flushed_lsn, { "data-field": "receiver.flushed_lsn" }],
      ["server LSN", r.server_lsn],
      ["lag", bytes(r.lag_bytes) + (r.lag_seconds !== null && r.lag_seconds !== undefined ? ", " + seconds(r.lag_seconds) : ""),
        { "data-field": "receiver.lag_bytes" }],
      ["last segment", r.last_segment ? r.last_segment + " · " + when(r.last_segment_at) + " (" + ago(r.last_segment_at, now) + ")" : "–"],
      ["receiving", r.partial || "–"],
      ["last error", r.last_error ? el("span", { class: "error", text: r.last_error }) : "none"],
    ]));
}

function slotPart(doc) {
  const s = doc.slot;
  let state;
  if (!s.known) state = badge("unknown", "warn");
  else if (!s.exists) state = badge("missing", "bad");
  else if (s.wal_status === "lost") state = badge("lost", "bad");
  else state = badge(s.active ? "active" : "inactive", s.active ? "ok" : "bad");
  return el("div", { class: "slot" },
    el("h3", { text: "Replication slot" }),
    dl([
      ["slot", el("span", {}, s.name + " ", state)],
      ["restart LSN", s.exists ? s.restart_lsn : "–"],
      ["wal_status", s.wal_status || "–"],
      ["WAL retained", s.exists ? bytes(s.retained_bytes) : "–", { "data-field": "slot.retained_bytes" }],
      ["safe_wal_size", s.safe_wal_size !== undefined ? bytes(s.safe_wal_size) : "unlimited"],
      ["PostgreSQL", doc.postgres.reachable ? doc.postgres.version + (doc.postgres.in_recovery ? " (standby)" : " (primary)") + ", at " + doc.postgres.current_lsn
        : el("span", { class: "error", text: "unreachable: " + (doc.postgres.error || "") })],
    ]));
}

function ladder(level, max) {
  const l = el("span", { class: "ladder", title: level + "/" + max });
  for (let i = 1; i <= max; i++) l.append(el("i", { class: i <= level ? "on" : "" }));
  return l;
}

function lagCell(b, s) {
  if (b === null || b === undefined) return el("td", { class: "num", text: "–" });
  return el("td", { class: "num" }, bytes(b), s !== null && s !== undefined ? el("div", { class: "muted", text: seconds(s) }) : null);
}

function clientsPart(doc) {
  const part = el("div", { class: "clients" }, el("h3", { text: "Standbys and WAL streamers" }));
  if (!doc.postgres.reachable || doc.clients.length === 0) {
    part.append(el("p", { class: "muted", text: doc.postgres.reachable ? "No replication connection." : "PostgreSQL cannot be asked." }));
    return part;
  }
  const t = el("table", {}, el("tr", {},
    ["application_name", "client", "state", "sync stage"].map(h => el("th", { text: h })),
    ["sent lag", "write lag", "flush lag", "replay lag"].map(h => el("th", { class: "num", text: h }))));
  for (const c of doc.clients) {
    t.append(el("tr", { "data-client": c.application_name },
      el("td", {}, c.application_name, c.walhub ? el("span", { class: "muted", text: " (this hub)" }) : null),
      el("td", { text: (c.client_addr || "local") + (c.user ? " · " + c.user : "") }),
      el("td", { text: c.state + " · " + c.sync_state }),
      el("td", {}, ladder(c.sync_stage_level, c.sync_stage_max), c.sync_stage),
      lagCell(c.sent_lag_bytes, null), lagCell(c.write_lag_bytes, c.write_lag_seconds),
      lagCell(c.flush_lag_bytes, c.flush_lag_seconds), lagCell(c.replay_lag_bytes, c.replay_lag_seconds)));
  }
  part.append(t);
  return part;
}

// The WAL held per timeline: one bar from the first to the last segment held,
// the gaps on that timeline drawn over it.
function walPart(doc) {
  const w = doc.wal;
  const part = el("div", { class: "wal" }, el("h3", {},
    "WAL held: " + w.segments + " segments, " + bytes(w.bytes) + " (" + bytes(w.stored_bytes) + " stored)"));
  if (!w.in_catalog || w.timelines.length === 0) {
    part.append(el("p", { class: "muted", text: "No WAL held yet." }));
  }
  const segSize = w.segment_size || 16777216;
  const tlis = new Set(w.timelines.map(t => t.timeline));
  for (const g of w.gaps) tlis.add(g.timeline);
  for (const tli of [...tlis].sort((a, b) => a - b)) {
    const held = w.timelines.find(t => t.timeline === tli);
    const gaps = w.gaps.filter(g => g.timeline === tli && g.first_segment);
    let lo = Infinity, hi = -Infinity;
    if (held) { lo = segNo(held.first_segment, segSize); hi = segNo(held.last_segment, segSize) + 1; }
    for (const g of gaps) { lo = Math.min(lo, segNo(g.first_segment, segSize)); hi = Math.max(hi, segNo(g.last_segment, segSize) + 1); }
    if (!isFinite(lo)) continue;
    const span = Math.max(1, hi - lo);
    const x = n => ((n - lo) / span) * 1000;
    const svg = svgEl("svg", { viewBox: "0 0 1000 22", preserveAspectRatio: "none", height: "22", "data-timeline": tli });
    if (held) {
      svg.append(svgEl("rect", { class: "held", x: x(segNo(held.first_segment, segSize)), y: 2,
        width: Math.max(2, x(segNo(held.last_segment, segSize) + 1) - x(segNo(held.first_segment, segSize))), height: 18 },
      held.first_segment + " … " + held.last_segment + ": " + held.segments + " segments"));
    }
    for (const g of gaps) {
      const gx = x(segNo(g.first_segment, segSize));
      svg.append(svgEl("rect", { class: "gap", x: gx, y: 0, width: Math.max(4, x(segNo(g.last_segment, segSize) + 1) - gx), height: 22,
        "data-first": g.first_segment, "data-last": g.last_segment },
      "gap (" + g.source + "): " + g.first_segment + (g.last_segment !== g.first_segment ? " … " + g.last_segment : "") +
        ", " + g.segments + " segment(s)" + (g.reason ? ": " + g.reason : "") +
        (g.after_oldest_backup ? " — recovery from the backups cannot cross it" : "")));
    }
    const blocking = gaps.filter(g => g.after_oldest_backup).length;
    part.append(el("div", { class: "tl" },
      el("div", { class: "caption" },
        el("span", { text: "timeline " + tli + (held ? ": " + held.first_segment + " … " + held.last_segment : "") }),
        el("span", { class: gaps.length ? "error" : "muted",
          text: gaps.length ? gaps.length + " gap(s)" + (blocking ? ", " + blocking + " after the oldest backup" : "") : "no gap" })),
      svg));
  }
  return part;
}

// Backups on a time axis, with the window a restore can reach shaded: the
// status document's recoverable window, from the end of the oldest backup
// whose WAL is all held to the newest commit indexed in the WAL held without
// a gap (or, when none is indexed, the newest WAL held).
function backupsPart(doc, backups) {
  const now = new Date(doc.generated_at).getTime();
  const part = el("div", { class: "backups" }, el("h3", {},
    "Backups: " + doc.backups.count + " done, " + doc.backups.failed + " failed" +
    (doc.backups.running ? ", " + doc.backups.running + " running" : "") +
    (doc.backups.waiting_wal ? ", " + doc.backups.waiting_wal + " waiting for WAL" : "") +
    " · " + bytes(doc.backups.size) + " (" + bytes(doc.backups.stored_size) + " stored)"));
  if (backups.length === 0) {
    part.append(el("p", { class: "muted", text: "No backup." }));
    return part;
  }
  const start = b => new Date(b.started_at).getTime();
  const end = b => b.finished_at ? new Date(b.finished_at).getTime() : now;
  let lo = Math.min(...backups.map(start)), hi = now;
  const pad = Math.max((hi - lo) * 0.03, 60000);
  lo -= pad; hi += pad;
  const x = t => ((t - lo) / (hi - lo)) * 1000;
  const svg = svgEl("svg", { viewBox: "0 0 1000 56", preserveAspectRatio: "none", height: "56", class: "timeaxis" });
  const r = doc.recoverable;
  let windowText = "no backup can be restored with the WAL held", windowClass = "error";
  if (r) {
    const from = new Date(r.earliest_time).getTime();
    let to = r.latest_time ? new Date(r.latest_time).getTime() : null, toText = when(r.latest_time) + " (newest commit)";
    if (to === null) {
      to = doc.wal.last_segment_at ? new Date(doc.wal.last_segment_at).getTime() : from;
      toText = when(to) + " (newest WAL held)";
    }
    svg.append(svgEl("rect", { class: "window", x: x(from), y: 0, width: Math.max(2, x(to) - x(from)), height: 40 },
      "recoverable: " + when(from) + " … " + toText));
    windowText = "recoverable window: " + when(from) + " (end of " + r.earliest_backup + ") … " + toText +
      ", WAL up to " + r.latest_lsn + " from " + r.latest_backup;
    windowClass = "muted";
    const blocking = doc.wal.gaps.filter(g => g.after_oldest_backup).length;
    if (blocking) {
      windowText += " · " + blocking + " gap(s) in the WAL after the oldest backup: a point inside a gap cannot be reached";
      windowClass = "error";
    }
  }
  for (const b of backups) {
    svg.append(svgEl("rect", { class: "backup " + b.state, x: x(start(b)), y: 8, width: Math.max(4, x(end(b)) - x(start(b))), height: 24,
      "data-backup": b.id }, b.id + " (" + b.kind + ", " + b.state + "): " + when(b.started_at) + " … " + when(b.finished_at)));
  }
  svg.append(svgEl("line", { class: "axis", x1: 0, y1: 40.5, x2: 1000, y2: 40.5 }));
  for (let i = 0; i <= 4; i++) {
    const t = lo + ((hi - lo) * i) / 4;
    const tx = svgEl("text", { x: i === 0 ? 2 : i === 4 ? 998 : x(t), y: 53, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" });
    tx.textContent = (hi - lo < 3 * 3600000 ? timeFormat : shortFormat).format(new Date(t));
    svg.append(tx);
  }
  part.append(svg, el("p", { class: windowClass, "data-field": "recoverable", text: windowText }));
  const t = el("table", {}, el("tr", {}, ["id", "kind", "state", "started", "took", "size", "stored", ""].map(h => el("th", { text: h }))));
  for (const b of backups.slice().reverse().slice(0, 20)) {
    t.append(el("tr", { "data-backup-row": b.id },
      el("td", { text: b.id }), el("td", { text: b.kind }),
      el("td", {}, badge(b.state, b.state === "done" ? "ok" : b.state === "failed" ? "bad" : "run")),
      el("td", { text: when(b.started_at) }),
      el("td", { text: b.finished_at ? seconds((end(b) - start(b)) / 1000) : "–" }),
      el("td", { class: "num", text: bytes(b.original_size) }), el("td", { class: "num", text: bytes(b.stored_size) }),
      el("td", { class: "error", text: b.reason || "" })));
  }
  part.append(t);
  return part;
}

// progressBar is a bar filled to percent; its width is set through the CSSOM,
// which the page's Content-Security-Policy allows (style attributes it does not).
function progressBar(percent) {
  const fill = el("div");
  fill.style.width = Math.min(100, Math.max(0, percent)) + "%";
  return el("div", { class: "progress" }, fill);
}

function workPart(doc) {
  const part = el("div", { class: "work" }, el("h3", { text: "Running work" }));
  const held = [];
  for (const name of ["backup", "expire", "snapshot", "other"]) {
    const l = doc.lock[name];
    if (l && l.held) held.push([name, l]);
  }
  if (held.length === 0) {
    part.append(el("p", { class: "muted", text: "Nothing running." }));
  }
  const now = new Date(doc.generated_at);
  for (const [name, l] of held) {
    part.append(el("div", { "data-work": name },
      el("div", {}, badge(l.command || name, "run"), " ",
        (l.progress !== undefined ? l.progress.toFixed(0) + "% · " : "") + "since " + when(l.since) + " (" + ago(l.since, now) + "), pid " + l.pid + " on " + l.host +
        (l.detail ? " · " + l.detail : "")),
      l.progress !== undefined ? progressBar(l.progress) : null));
  }
  const r = doc.repository;
  part.append(el("p", { class: r.error ? "error" : r.free_percent < 10 ? "error" : "muted",
    text: r.error ? r.error : "repository: " + bytes(r.free_bytes) + " free of " + bytes(r.total_bytes) + " (" + r.free_percent.toFixed(1) + "%)" }));
  return part;
}

// A read-only hub's catalog refresh: what stands for the receiver and the
// slot of a hub that follows a repository another hub writes.
function refreshPart(doc) {
  const f = doc.refresh || {};
  const now = new Date(doc.generated_at);
  return el("div", { class: "receiver" },
    el("h3", { text: "Catalog refresh" }),
    dl([
      ["state", el("span", {}, badge(f.state || "unknown", refreshKind(f)), " every " + seconds(f.interval_seconds))],
      ["last success", f.last_success_at ? when(f.last_success_at) + " (" + ago(f.last_success_at, now) + ")" : "never"],
      ["failures since", String(f.failures || 0)],
      ["last error", f.last_error ? el("span", { class: "error", text: f.last_error }) : "none"],
      ["PostgreSQL", "not asked: this hub is read-only and has no connection to the server"],
    ]));
}

function refreshKind(f) { return f.state === "ok" ? "ok" : f.state === "failing" ? "warn" : "bad"; }

function serverSection(doc, backups) {
  const r = doc.receiver;
  if (doc.read_only) {
    return el("section", { class: "server", "data-server": doc.server },
      el("h2", {}, doc.server, badge("read-only", refreshKind(doc.refresh || {})),
        el("span", { class: "muted", text: doc.wal.system_id ? "system " + doc.wal.system_id : "" })),
      el("div", { class: "grid" }, refreshPart(doc)),
      walPart(doc),
      backupsPart(doc, backups),
      workPart(doc));
  }
  return el("section", { class: "server", "data-server": doc.server },
    el("h2", {}, doc.server,
      badge(r.running && r.state === "streaming" ? "streaming" : r.state, r.running && r.state === "streaming" ? "ok" : "bad"),
      el("span", { class: "muted", text: doc.wal.system_id ? "system " + doc.wal.system_id : "" })),
    el("div", { class: "grid" }, receiverPart(doc), slotPart(doc)),
    clientsPart(doc),
    walPart(doc),
    backupsPart(doc, backups),
    workPart(doc));
}

// ---- the page ----

function showLogin(message) {
  clearTimeout(refreshTimer);
  document.getElementById("servers").replaceChildren();
  document.getElementById("logout").hidden = true;
  document.getElementById("meta").textContent = "";
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function refresh() {
  clearTimeout(refreshTimer);
  const problem = document.getElementById("problem");
  try {
    const list = await api("v1/servers");
    const sections = await Promise.all(list.servers.map(async name => {
      const base = "v1/servers/" + encodeURIComponent(name);
      try {
        const [doc, backups] = await Promise.all([api(base + "/status"), api(base + "/backups")]);
        return serverSection(doc, backups);
      } catch (e) {
        if (e instanceof AuthError) throw e;
        return el("section", { class: "server", "data-server": name }, el("h2", { text: name }), el("p", { class: "error", text: e.message }));
      }
    }));
    document.getElementById("login").hidden = true;
    document.getElementById("logout").hidden = false;
    document.getElementById("servers").replaceChildren(...sections);
    problem.hidden = true;
    document.getElementById("meta").textContent = list.servers.length + " server(s) · updated " +
      timeFormat.format(new Date()) + " · times in " + Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    if (e instanceof AuthError) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("That token was refused.");
      return;
    }
    // The hub is unreachable or failing: keep what is shown, say so, retry.
    problem.textContent = "Cannot refresh: " + e.message;
    problem.hidden = false;
  }
  refreshTimer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    document.getElementById("token").value = "";
    refresh();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && sessionStorage.getItem(TOKEN_KEY) !== null) refresh();
  });
  if (sessionStorage.getItem(TOKEN_KEY) === null) showLogin("");
  else refresh();
});
