// memq dashboard: follows the server's stats stream, draws the queue table and charts, and
// steers queues through the queue API. No dependencies; everything is drawn here.

const API = "/memq/server";
const AUTH = document.querySelector('meta[name="memq-auth"]')?.content || "open";
const TOKEN_KEY = "memq-token";
const WINDOW_MS = 15 * 60 * 1000;
// Chart spans and their tick steps: a chart covers the shortest span that holds its samples, up
// to 15 minutes, so a young server's charts are not a sliver at the right edge.
const SPANS = [
  [60_000, 15_000],
  [120_000, 30_000],
  [300_000, 60_000],
  [600_000, 120_000],
  [WINDOW_MS, 300_000],
];
const STALL_MS = 6000; // the server sends an event a second; silence this long means trouble
// Whether the server launches consumer Jobs (--jobs with a cluster): only then is /jobs asked.
const JOBS = document.querySelector('meta[name="memq-jobs"]')?.content === "on";

const $ = (id) => document.getElementById(id);

// A server without tokens lets anyone do anything (what /dashboard/session answers then).
const OPEN_SESSION = Object.freeze({
  kind: "session",
  auth: "open",
  token: null,
  role: "admin",
  queues: "*",
  may: Object.freeze({ read: true, enqueue: true, consume: true, admin: true, jobs: true }),
});

// Names in natural order, everywhere the page sorts by name: q2 before q10, case aside. Ties
// (names equal but for case) go by code units, so the order is total.
const COLLATOR = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
const compareNames = (a, b) => COLLATOR.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  // What the token may do, as /dashboard/session says: { token, role, queues, may }. Without
  // tokens on the server, anything; null while it is asked, and without a token (read-only).
  session: AUTH === "open" ? OPEN_SESSION : null,
  // The model: name -> record { name, lower, rank, data (the row as last sent), at (time of
  // the event that sent it), view (its <tr> and cells while the row is rendered, else null) }.
  rows: new Map(),
  seq: null, // number of the sample the model holds; null: the next event must be whole
  byName: [], // every record in natural order of names; rank is the index here
  sorted: [], // every record in table order
  order: [], // the records the table lists: sorted and filtered
  shown: [], // the records whose rows are in the DOM (the window onto `order`), in order
  rowHeight: 0, // measured once the first row is drawn
  sort: { key: "name", dir: 1 },
  filter: "",
  selected: null,
  selectedSeen: false, // the selected queue has been in a snapshot (so its absence means deleted)
  history: null, // { name, loading, t: [], depth: [], inflight: [], rateIn: [], rateOut: [] }
  items: { name: null, signature: "", loadedAt: 0, busy: false },
  leases: null, // the selected queue's leases: see resetLeases
  lastTime: 0,
  skews: [], // server time minus our time, at the last few snapshots (see serverNow)
  live: false,
  everLive: false,
};

// ---------- formatting ----------

function trimZero(s) {
  return s.endsWith(".0") ? s.slice(0, -2) : s;
}

/** 999, 1.2k, 34k, 3.4M. */
function fmtCount(n) {
  if (n == null || !Number.isFinite(n)) return "–";
  const sign = n < 0 ? "-" : "";
  let a = Math.abs(n);
  if (a < 999.5) return sign + String(Math.round(a));
  const units = ["k", "M", "B", "T"];
  let i = -1;
  while (a >= 999.5 && i < units.length - 1) {
    a /= 1000;
    i++;
  }
  return sign + (a < 99.95 ? trimZero(a.toFixed(1)) : String(Math.round(a))) + units[i];
}

/** Items per second: 0, 0.4, 12, 1.5k. */
function fmtRate(r) {
  if (!r) return "0";
  if (r < 0.05) return "<0.1";
  if (r < 9.95) return trimZero(r.toFixed(1));
  return fmtCount(r);
}

/** 42s, 2m 10s, 5m, 3h 5m, 2d 4h. */
function fmtDuration(s) {
  if (!Number.isFinite(s)) return "∞";
  s = Math.max(0, Math.round(s));
  const two = (big, bigUnit, small, smallUnit) => (small ? `${big}${bigUnit} ${small}${smallUnit}` : `${big}${bigUnit}`);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return two(m, "m", s % 60, "s");
  const h = Math.floor(m / 60);
  if (h < 24) return two(h, "h", m % 60, "m");
  const d = Math.floor(h / 24);
  return two(d, "d", h % 24, "h");
}

function fmtAge(s) {
  if (!s) return "–";
  return s < 1 ? "<1s" : fmtDuration(s);
}

/** Time until no item is ready, at the last 10 s' rates. */
function eta(q) {
  const backlog = q.depth + q.delayed;
  if (backlog === 0) return { sec: 0, text: "–", title: "nothing waiting" };
  if (q.paused) return { sec: Infinity, text: "paused", title: "paused: nothing is handed out" };
  const net = q.rateOut - q.rateIn;
  if (net <= 0) {
    const why = q.rateOut > 0 ? "more comes in than goes out" : "nothing taken in the last 10 s";
    return { sec: Infinity, text: "∞", title: `not draining: ${why}` };
  }
  const sec = backlog / net;
  return { sec, text: fmtDuration(sec), title: `${fmtCount(backlog)} items at ${fmtRate(net)}/s net` };
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

/** Whether requests go out with credentials: without tokens on the server, or with a token.
 * Reads beyond the figures (items, dead letters, item lookups) need that, also with
 * --public-reads; what the token may change is `denied`'s to say. */
function canWrite() {
  return AUTH === "open" || Boolean(state.token);
}

// ---------- what the token may do ----------

/** A token's queues glob as the server reads it: `*` any run of characters (none too), `?`
 * exactly one, anything else itself; the whole name must match. */
function globMatch(glob, name) {
  let g = 0;
  let n = 0;
  let star = -1; // where the last `*` was, to try it on one more character
  let from = 0; // the first character that `*` has not taken yet
  while (n < name.length) {
    if (g < glob.length && glob[g] === "*") {
      star = g++;
      from = n;
    } else if (g < glob.length && (glob[g] === "?" || glob[g] === name[n])) {
      g++;
      n++;
    } else if (star >= 0) {
      g = star + 1;
      n = ++from;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob[g] === "*") g++;
  return g === glob.length;
}

const NEEDS = { read: "a token", enqueue: "a producer token", consume: "a consumer token", admin: "an admin token" };

/** Whether the token covers `name` (true with no session: then the server alone decides). */
function covers(name) {
  const s = state.session;
  return !s || globMatch(s.queues, name);
}

function outsideNote(name) {
  const s = state.session;
  return `Token ${s.token} covers queues ${s.queues}, not ${name}.`;
}

/** Why the token may not do `what` (read, enqueue, consume, admin, jobs) on queue `queue` (or
 * on none), as a button's title says it; null when it may. */
function denied(what, queue = null) {
  const s = state.session;
  if (!s) return state.token ? "checking what this token may do…" : "needs a token: sign in";
  if (what === "jobs") return s.may.jobs ? null : "needs an admin token for every queue (*)";
  if (!s.may[what]) return `needs ${NEEDS[what]}`;
  if (queue != null && !globMatch(s.queues, queue)) return `token ${s.token} covers queues ${s.queues}, not ${queue}`;
  return null;
}

/** Turns a control off (kept in sight) with the reason as its title, or on again with the
 * title it came with; `busy`: off for a reason of its own (nothing to drain, a request out). */
function permit(el, why, busy = false) {
  if (el.dataset.title === undefined) el.dataset.title = el.title;
  const off = Boolean(why) || busy;
  if (el.disabled !== off) el.disabled = off;
  const title = why || el.dataset.title;
  if (el.title !== title) el.title = title;
}

/** Asks /dashboard/session what `token` may do: its answer, or null when the server refuses
 * the token; throws when the server cannot be reached. */
async function fetchSession(token) {
  const resp = await fetch("/dashboard/session", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  const data = await resp.json().catch(() => null);
  if (resp.status === 401) return null;
  if (!resp.ok || data?.kind !== "session" || !data.may) throw new Error(`the session answered ${resp.status}`);
  return data;
}

let sessionAsked = null;

/** Asks again what the stored token may do (at start, after a 403, now and then: a tokens
 * file can change under the page) and shows it. */
function refreshSession() {
  if (AUTH === "open" || !state.token) return Promise.resolve();
  if (sessionAsked) return sessionAsked;
  const token = state.token;
  sessionAsked = fetchSession(token)
    .then(
      (session) => {
        if (state.token !== token) return;
        if (session) setSession(session);
        else tokenRefused();
      },
      () => {}, // offline: asked again once the stream is back
    )
    .finally(() => (sessionAsked = null));
  return sessionAsked;
}

function setSession(session) {
  const before = JSON.stringify(state.session);
  state.session = session;
  if (JSON.stringify(session) === before) return;
  // Other rights: the lists of the open queue load again, as they may now.
  state.items.loadedAt = 0;
  state.items.signature = "";
  if (state.selected) resetLeases(state.selected);
  applyAuthView();
}

async function api(path, { method = "GET", body, type } = {}) {
  const headers = authHeaders(type ? { "Content-Type": type } : {});
  const resp = await fetch(API + path, { method, body, headers, cache: "no-store" });
  let data = null;
  if ((resp.headers.get("content-type") || "").includes("json")) {
    data = await resp.json().catch(() => null);
  } else {
    await resp.text().catch(() => "");
  }
  if (resp.status === 401) {
    tokenRefused();
    throw new ApiError(401, "unauthorized", "The server wants a token.");
  }
  // Beyond the token's role or queues: its rights may have changed under the page.
  if (resp.status === 403) refreshSession();
  if (!resp.ok) {
    throw new ApiError(resp.status, data?.code, data?.message || `${resp.status} ${resp.statusText}`);
  }
  return data;
}

const q = (name) => `/queues/${encodeURIComponent(name)}`;

// ---------- connection: the stats stream ----------

let stream = null; // AbortController of the current connection
let retryTimer = 0;
let stallTimer = 0;
let backoff = 0;

function setConn(kind, text) {
  const el = $("conn");
  el.dataset.state = kind;
  $("conn-text").textContent = text;
  document.body.classList.toggle("stale", kind === "offline");
}

function needsToken() {
  return AUTH === "token" && !state.token;
}

function connect() {
  clearTimeout(retryTimer);
  stream?.abort();
  if (needsToken()) {
    setConn("connecting", "signed out");
    return;
  }
  const ctl = new AbortController();
  stream = ctl;
  state.seq = null; // a new connection starts with a whole snapshot
  if (!state.live) setConn(state.everLive ? "offline" : "connecting", state.everLive ? "offline · retrying" : "connecting…");
  follow(ctl).then(
    () => lost(ctl),
    () => lost(ctl),
  );
}

function lost(ctl) {
  clearTimeout(stallTimer);
  if (ctl !== stream) return; // replaced by a newer connection
  state.live = false;
  setConn("offline", "offline · retrying");
  backoff = Math.min(backoff ? backoff * 2 : 500, 4000);
  retryTimer = setTimeout(connect, backoff);
}

function armStall(ctl) {
  clearTimeout(stallTimer);
  stallTimer = setTimeout(() => ctl.abort("stalled"), STALL_MS);
}

async function follow(ctl) {
  // Only what changed, after the first (whole) snapshot: an idle server of many queues costs a
  // page almost nothing.
  const resp = await fetch(`${API}/stats/stream?changes=true`, {
    headers: authHeaders({ Accept: "text/event-stream" }),
    signal: ctl.signal,
    cache: "no-store",
  });
  if (resp.status === 401) {
    tokenRefused();
    return;
  }
  if (!resp.ok || !resp.body) throw new Error(`stream answered ${resp.status}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  armStall(ctl);
  let buf = "";
  let from = 0; // where to look for the end of the event: a whole snapshot comes in many chunks
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    armStall(ctl);
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n", from)) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      from = 0;
      onEvent(block);
      if (ctl !== stream || ctl.signal.aborted) return; // the event asked for a new connection (a gap in seq)
    }
    from = Math.max(0, buf.length - 1);
  }
}

function onEvent(block) {
  const data = [];
  for (const raw of block.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
  }
  if (data.length === 0) return; // a keep-alive comment
  let ev;
  try {
    ev = JSON.parse(data.join("\n"));
  } catch {
    return;
  }
  if (!state.live) {
    const wasOffline = state.everLive;
    state.live = true;
    state.everLive = true;
    backoff = 0;
    setConn("live", "live");
    // Samples were missed while away (or the server restarted): fetch the charts anew.
    if (wasOffline && state.selected) loadHistory(state.selected);
    if (state.token && !state.session) refreshSession();
  }
  applyEvent(ev);
}

// ---------- queue table ----------

/** Age of the queue's oldest ready item now: the server sends a row again when its figures
 * change, not because its oldest item grew older, so the time since that row came is added. */
function ageOf(rec) {
  const d = rec.data;
  if (!(d.depth > 0)) return d.oldestAgeSeconds || 0;
  return (d.oldestAgeSeconds || 0) + Math.max(0, state.lastTime - rec.at) / 1000;
}

const COLUMNS = [
  { key: "depth", get: (d) => d.depth, fmt: fmtCount, zero: true },
  { key: "delayed", get: (d) => d.delayed, fmt: fmtCount, zero: true },
  // With the number of named consumers (X-Memq-Consumer) that hold those leases.
  {
    key: "inflight",
    get: (d) => d.inflight,
    fmt: fmtCount,
    text: (d) => (d.consumers > 0 ? `${fmtCount(d.inflight)} by ${d.consumers}` : fmtCount(d.inflight)),
    title: (d) =>
      d.consumers > 0
        ? `${d.inflight.toLocaleString()} in flight, held by ${d.consumers.toLocaleString()} named consumer${d.consumers === 1 ? "" : "s"}`
        : "",
    zero: true,
  },
  { key: "dead", get: (d) => d.dead, fmt: fmtCount, zero: true, warn: true },
  { key: "enqueued", get: (d) => d.enqueued, fmt: fmtCount, zero: true },
  { key: "acked", get: (d) => d.acked, fmt: fmtCount, zero: true },
  { key: "rateIn", get: (d) => d.rateIn, fmt: fmtRate, zero: true },
  { key: "rateOut", get: (d) => d.rateOut, fmt: fmtRate, zero: true },
  { key: "oldest", get: (d, rec) => ageOf(rec), fmt: fmtAge, zero: true },
  { key: "eta", get: (d) => d.eta.sec, text: (d) => d.eta.text, title: (d) => d.eta.title, zero: true },
];

function makeView(rec) {
  const tr = document.createElement("tr");
  tr.dataset.queue = rec.name;
  if (rec.name === state.selected) tr.classList.add("selected");
  const nameCell = document.createElement("td");
  nameCell.className = "name";
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "qname";
  btn.textContent = rec.name;
  btn.title = rec.name;
  const badge = document.createElement("span");
  badge.className = "badge paused";
  badge.textContent = "paused";
  badge.hidden = true;
  nameCell.append(btn, badge);
  tr.append(nameCell);
  const cells = {};
  const shown = {};
  for (const col of COLUMNS) {
    const td = document.createElement("td");
    td.dataset.col = col.key;
    tr.append(td);
    cells[col.key] = td;
    shown[col.key] = null;
  }
  return { tr, badge, cells, shown, flags: {}, index: 0 };
}

function toggleClass(view, key, cls, on) {
  const id = `${key}.${cls}`;
  if (view.flags[id] !== on) {
    view.flags[id] = on;
    view.cells[key].classList.toggle(cls, on);
  }
}

/** Brings a rendered row's cells to its record, touching only the cells whose text changed. */
function updateRow(rec) {
  const view = rec.view;
  const data = rec.data;
  if (view.badge.hidden === data.paused) view.badge.hidden = !data.paused;
  for (const col of COLUMNS) {
    const value = col.get(data, rec);
    const text = col.text ? col.text(data) : col.fmt(value);
    if (view.shown[col.key] !== text) {
      view.shown[col.key] = text;
      const td = view.cells[col.key];
      td.textContent = text;
      const full = col.title ? col.title(data) : text !== String(value) && col.fmt === fmtCount ? value.toLocaleString() : "";
      if (td.title !== full) td.title = full;
    }
    if (col.zero) toggleClass(view, col.key, "zero", !value);
    if (col.warn) toggleClass(view, col.key, "warn", value > 0);
  }
}

function sortValue(rec, key) {
  if (key === "oldest") return ageOf(rec);
  if (key === "eta") return rec.data.eta.sec;
  return rec.data[key];
}

function compareRecs(a, b) {
  const { key, dir } = state.sort;
  const x = sortValue(a, key);
  const y = sortValue(b, key);
  if (x !== y) return (x < y ? -1 : 1) * dir;
  return a.rank - b.rank;
}

/** Natural order of every name, after queues came or went. */
function rankNames(added) {
  const byName = added ? [...state.rows.values()].sort((a, b) => compareNames(a.name, b.name)) : state.byName.filter((r) => state.rows.get(r.name) === r);
  byName.forEach((r, i) => (r.rank = i));
  state.byName = byName;
}

/** Puts every record in table order (after a change of sort, or of figures it sorts by), then
 * filters and renders. Ages grow alike on all rows, so they need no new sort by themselves. */
function arrange(resort = true) {
  if (resort) {
    const { key, dir } = state.sort;
    if (key === "name") state.sorted = dir > 0 ? state.byName : state.byName.slice().reverse();
    else state.sorted = state.byName.slice().sort(compareRecs);
  }
  const filter = state.filter;
  state.order = filter ? state.sorted.filter((r) => r.lower.includes(filter)) : state.sorted;
  render();
}

// The table renders only the rows in sight, and a few more each side; spacers above and below
// stand for the rest at a fixed row height, so the scroll bar is that of the whole table.
const OVERSCAN = 8;
const HEAD_HEIGHT = 34;
let renderQueued = false;

function renderSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function setPad(id, px) {
  const body = $(id);
  if (body.hidden !== (px === 0)) body.hidden = px === 0;
  const td = body.firstElementChild.firstElementChild;
  const h = `${px}px`;
  if (td.style.height !== h) td.style.height = h;
}

function render() {
  const wrap = $("table-wrap");
  const order = state.order;
  const n = order.length;
  const rh = state.rowHeight || 36;
  const fit = Math.ceil(Math.max(wrap.clientHeight - HEAD_HEIGHT, rh * 10) / rh) + 1;
  const first = Math.floor(wrap.scrollTop / rh);
  const start = Math.max(0, Math.min(first - OVERSCAN, n - fit - OVERSCAN));
  const end = Math.min(n, start + fit + 2 * OVERSCAN);
  const list = order.slice(start, end);
  const old = state.shown;
  if (list.length !== old.length || list.some((r, i) => r !== old[i])) {
    const keep = new Set(list);
    for (const r of old) if (!keep.has(r)) r.view = null;
    const focused = document.activeElement;
    const frag = document.createDocumentFragment();
    for (const r of list) {
      if (!r.view) r.view = makeView(r);
      frag.append(r.view.tr);
    }
    $("rows").replaceChildren(frag);
    state.shown = list;
    if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
  }
  setPad("pad-top", start * rh);
  setPad("pad-bottom", (n - end) * rh);
  list.forEach((r, i) => {
    const index = start + i + 2; // row 1 is the heading
    if (r.view.index !== index) {
      r.view.index = index;
      r.view.tr.setAttribute("aria-rowindex", String(index));
    }
    updateRow(r);
  });
  const count = String(n + 1);
  const table = $("queue-table");
  if (table.getAttribute("aria-rowcount") !== count) table.setAttribute("aria-rowcount", count);
  $("empty").hidden = state.rows.size > 0;
  if (!state.rowHeight && list.length) {
    const h = list[0].view.tr.getBoundingClientRect().height;
    if (h > 0) {
      state.rowHeight = h;
      if (Math.abs(h - rh) > 0.5) render();
    }
  }
}

/** One event of the stream: a whole snapshot (`stats`, at any time: it replaces the model) or
 * the change since the sample before (`statsDelta`: rows that changed, queues `removed`). */
function applyEvent(ev) {
  if (ev?.kind !== "stats" && ev?.kind !== "statsDelta") return; // not ours to read
  const whole = ev.kind === "stats";
  if (!whole && (state.seq === null || ev.seq !== state.seq + 1)) {
    connect(); // a change to a sample we do not hold: start again from a whole snapshot
    return;
  }
  const time = Date.parse(ev.time) || Date.now();
  state.lastTime = time;
  state.seq = Number.isFinite(ev.seq) ? ev.seq : null;
  state.skews.push(time - Date.now());
  if (state.skews.length > 10) state.skews.shift();
  const queues = Array.isArray(ev.queues) ? ev.queues : [];
  const seen = whole ? new Set() : null;
  let added = false;
  for (const data of queues) {
    data.rateIn = data.rateIn || 0;
    data.rateOut = data.rateOut || 0;
    data.eta = eta(data);
    seen?.add(data.name);
    let rec = state.rows.get(data.name);
    if (!rec) {
      rec = { name: data.name, lower: data.name.toLowerCase(), rank: 0, data, at: time, view: null };
      state.rows.set(data.name, rec);
      added = true;
    }
    rec.data = data;
    rec.at = time;
  }
  const gone = whole ? [...state.rows.keys()].filter((name) => !seen.has(name)) : Array.isArray(ev.removed) ? ev.removed : [];
  let removed = false;
  for (const name of gone) removed = state.rows.delete(name) || removed;
  if (added || removed) rankNames(added);
  if (added || removed || (queues.length > 0 && state.sort.key !== "name")) arrange();
  else render();
  const totals = { depth: 0, inflight: 0, dead: 0, rateIn: 0, rateOut: 0 };
  for (const rec of state.rows.values()) for (const k in totals) totals[k] += rec.data[k];
  setText("t-queues", fmtCount(state.rows.size));
  setText("t-depth", fmtCount(totals.depth));
  setText("t-inflight", fmtCount(totals.inflight));
  setText("t-dead", fmtCount(totals.dead));
  setText("t-in", fmtRate(totals.rateIn));
  setText("t-out", fmtRate(totals.rateOut));
  updateDetail(time);
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function setSort(key) {
  if (state.sort.key === key) state.sort.dir = -state.sort.dir;
  else state.sort = { key, dir: key === "name" ? 1 : -1 };
  for (const th of document.querySelectorAll("#queue-table thead th")) {
    const k = th.querySelector("button")?.dataset.sort;
    th.setAttribute("aria-sort", k === key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
  arrange();
}

// ---------- detail ----------

function select(name) {
  if (state.selected === name) return;
  state.rows.get(state.selected)?.view?.tr.classList.remove("selected");
  state.selected = name;
  state.selectedSeen = false;
  history.replaceState(null, "", name ? `#queue=${encodeURIComponent(name)}` : location.pathname);
  $("detail-hint").hidden = Boolean(name);
  $("detail-body").hidden = !name;
  resetLeases(name);
  resetFind();
  if (!name) return;
  state.rows.get(name)?.view?.tr.classList.add("selected");
  $("detail-title").textContent = name;
  $("detail-title").title = name;
  $("enqueue-text").value = "";
  state.items = { name, signature: "", loadedAt: 0, busy: false };
  $("peek").replaceChildren();
  $("dead").replaceChildren();
  loadHistory(name);
  updateDetail(state.lastTime);
}

async function loadHistory(name) {
  const h = { name, loading: true, t: [], depth: [], inflight: [], rateIn: [], rateOut: [], pending: [] };
  state.history = h;
  drawCharts();
  try {
    const data = await api(`/stats/history?queue=${encodeURIComponent(name)}&seconds=900`);
    if (state.history !== h) return;
    const s = data.queues.find((x) => x.name === name);
    if (s) {
      data.times.forEach((iso, i) => {
        if (s.depth[i] == null) return;
        h.t.push(Date.parse(iso));
        h.depth.push(s.depth[i]);
        h.inflight.push(s.inflight[i]);
        h.rateIn.push(s.rateIn[i]);
        h.rateOut.push(s.rateOut[i]);
      });
    }
  } catch (e) {
    if (e.status !== 401) toast(`Could not load the history of ${name}: ${e.message}`, true);
  }
  if (state.history !== h) return;
  h.loading = false;
  for (const p of h.pending) addPoint(h, p);
  h.pending = [];
  drawCharts();
}

function addPoint(h, p) {
  if (h.t.length && p.t <= h.t[h.t.length - 1]) return;
  h.t.push(p.t);
  h.depth.push(p.depth);
  h.inflight.push(p.inflight);
  h.rateIn.push(p.rateIn);
  h.rateOut.push(p.rateOut);
  let drop = 0;
  while (drop < h.t.length && h.t[drop] < p.t - WINDOW_MS) drop++;
  if (drop) for (const k of ["t", "depth", "inflight", "rateIn", "rateOut"]) h[k].splice(0, drop);
}

function updateDetail(time) {
  const name = state.selected;
  if (!name) return;
  const row = state.rows.get(name);
  if (!row?.data) {
    if (state.selectedSeen) {
      toast(`Queue ${name} is gone.`);
      select(null);
    }
    return;
  }
  state.selectedSeen = true;
  const d = row.data;
  $("detail-paused").hidden = !d.paused;
  setText("d-depth", fmtCount(d.depth));
  setText("d-inflight", fmtCount(d.inflight));
  setText("d-delayed", fmtCount(d.delayed));
  setText("d-dead", fmtCount(d.dead));
  setText("d-oldest", fmtAge(ageOf(row)));
  setText("d-eta", d.eta.text);
  $("d-eta").title = d.eta.title || "";
  setText("d-lease", fmtDuration(d.leaseSeconds));
  setText("d-attempts", d.maxAttempts ? String(d.maxAttempts) : "unlimited");
  setText("d-maxdepth", d.maxDepth ? fmtCount(d.maxDepth) : "unlimited");
  setText("l-depth", fmtCount(d.depth));
  setText("l-inflight", fmtCount(d.inflight));
  setText("l-in", `${fmtRate(d.rateIn)}/s`);
  setText("l-out", `${fmtRate(d.rateOut)}/s`);
  setText("a-pause", d.paused ? "Resume" : "Pause");
  applyQueuePermissions();

  const h = state.history;
  if (h && h.name === name) {
    const p = { t: time, depth: d.depth, inflight: d.inflight, rateIn: d.rateIn, rateOut: d.rateOut };
    if (h.loading) h.pending.push(p);
    else addPoint(h, p);
    drawCharts();
  }
  refreshItems(d);
  refreshLeases(d);
  tickLeases();
  tickFind();
  // Ages of the items shown move on between reloads of the lists.
  const now = Date.now();
  for (const el of document.querySelectorAll("#detail-body .age[data-since]")) {
    const text = fmtDuration((now - Number(el.dataset.since)) / 1000);
    if (el.textContent !== text) el.textContent = text;
  }
}

/** The open queue's controls, on or off by what the token may do on it. */
function applyQueuePermissions() {
  const name = state.selected;
  if (!name) return;
  const d = state.rows.get(name)?.data;
  const admin = denied("admin", name);
  permit($("a-pause"), admin);
  permit($("a-drain"), admin, !d || d.depth + d.delayed === 0);
  permit($("a-delete"), admin);
  permit($("a-requeue"), admin, !d || d.dead === 0);
  permit($("a-purge"), admin, !d || d.dead === 0);
  const enqueue = denied("enqueue", name);
  permit($("enqueue-text"), enqueue);
  permit($("enqueue-submit"), enqueue);
  const read = denied("read", name);
  permit($("find-input"), read);
  permit($("find-submit"), read, finding);
  // Finding an item needs a token whenever the server has them (also with --public-reads).
  const note = !canWrite() ? "Sign in with the token to find items." : state.session && !covers(name) ? outsideNote(name) : "";
  setText("find-note", note);
  if ($("find-note").hidden !== !note) $("find-note").hidden = !note;
  const L = state.leases;
  if (L?.name === name) {
    const consume = denied("consume", name);
    for (const [id, r] of L.trs) permit(r.btn, consume, L.releasing.has(id));
  }
}

// ---------- charts (SVG, drawn here) ----------

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

function scale(max, integer) {
  if (!(max > 0)) max = integer ? 4 : 1;
  let step = niceStep(max / 4);
  if (integer) step = Math.max(1, Math.ceil(step));
  const top = Math.ceil(max / step - 1e-9) * step;
  return { top: top || step, step };
}

function drawChart(svg, series, { integer, unit, fmt }) {
  const W = Math.max(240, Math.round(svg.getBoundingClientRect().width || 420));
  const H = 150;
  const m = { l: 46, r: 8, t: 16, b: 22 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const h = state.history;
  const now = state.lastTime || Date.now();
  const [span, tick] = chartSpan(h, now);
  const t0 = now - span;
  const x = (t) => m.l + ((t - t0) / span) * pw;
  let max = 0;
  for (const s of series) for (let i = 0; i < h.t.length; i++) if (h.t[i] >= t0 && s.values[i] > max) max = s.values[i];
  const { top, step } = scale(max, integer);
  const y = (v) => m.t + ph - (v / top) * ph;
  const out = [];
  out.push(`<text class="unit" x="0" y="9">${unit}</text>`);
  for (let v = 0; v <= top + step / 2; v += step) {
    const yy = y(v).toFixed(1);
    out.push(`<line class="grid" x1="${m.l}" x2="${W - m.r}" y1="${yy}" y2="${yy}"/>`);
    out.push(`<text class="axis" x="${m.l - 6}" y="${yy}" dy="3.5" text-anchor="end">${fmt(v)}</text>`);
  }
  for (let ago = span; ago >= 0; ago -= tick) {
    const xx = x(now - ago).toFixed(1);
    const anchor = ago === span ? "start" : ago === 0 ? "end" : "middle";
    out.push(`<line class="grid" x1="${xx}" x2="${xx}" y1="${m.t}" y2="${m.t + ph}"/>`);
    out.push(`<text class="axis" x="${xx}" y="${H - 6}" text-anchor="${anchor}">${agoLabel(ago)}</text>`);
  }
  if (h.loading || h.t.length === 0) {
    out.push(`<text class="nodata" x="${m.l + pw / 2}" y="${m.t + ph / 2}" text-anchor="middle">${h.loading ? "loading…" : "no samples yet"}</text>`);
  }
  for (const s of series) {
    let d = "";
    let first = -1;
    let last = -1;
    let pen = false;
    for (let i = 0; i < h.t.length; i++) {
      const v = s.values[i];
      if (h.t[i] < t0 || v == null) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(h.t[i]).toFixed(1)} ${y(v).toFixed(1)}`;
      pen = true;
      if (first < 0) first = i;
      last = i;
    }
    if (!d) continue;
    if (s.area && first >= 0) {
      const base = y(0).toFixed(1);
      out.push(`<path class="area a-${s.cls}" d="${d}L${x(h.t[last]).toFixed(1)} ${base}L${x(h.t[first]).toFixed(1)} ${base}Z"/>`);
    }
    out.push(`<path class="line s-${s.cls}" d="${d}"/>`);
  }
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.innerHTML = out.join("");
}

function chartSpan(h, now) {
  const held = h.t.length ? now - h.t[0] : 0;
  return SPANS.find(([span]) => span >= held) || SPANS[SPANS.length - 1];
}

function agoLabel(ms) {
  if (ms === 0) return "now";
  return ms % 60_000 === 0 ? `−${ms / 60_000} min` : `−${ms / 1000} s`;
}

function drawCharts() {
  const h = state.history;
  if (!h || h.name !== state.selected) return;
  const text = `last ${chartSpan(h, state.lastTime || Date.now())[0] / 60_000} min`;
  for (const el of document.querySelectorAll(".chart .window")) if (el.textContent !== text) el.textContent = text;
  drawChart(
    $("chart-depth"),
    [
      { values: h.depth, cls: "depth", area: true },
      { values: h.inflight, cls: "inflight" },
    ],
    { integer: true, unit: "items", fmt: fmtCount },
  );
  drawChart(
    $("chart-rate"),
    [
      { values: h.rateIn, cls: "in" },
      { values: h.rateOut, cls: "out" },
    ],
    { integer: false, unit: "items/s", fmt: (v) => (v < 10 ? trimZero(v.toFixed(2).replace(/0$/, "")) : fmtCount(v)) },
  );
}

// ---------- next items and dead letters ----------

function refreshItems(d) {
  const it = state.items;
  if (it.name !== d.name) return;
  if (!canWrite()) {
    $("peek").replaceChildren();
    $("dead").replaceChildren();
    setText("peek-note", "Sign in with the token to see items.");
    setText("dead-note", d.dead ? `${fmtCount(d.dead)} dead letters. Sign in with the token to see them.` : "None.");
    return;
  }
  if (!state.session) return; // asking what the token may do
  if (!covers(d.name)) {
    // The server would refuse (403): the token's glob does not hold this queue.
    $("peek").replaceChildren();
    $("dead").replaceChildren();
    setText("peek-note", outsideNote(d.name));
    setText("dead-note", d.dead ? `${fmtCount(d.dead)} dead letters.` : "None.");
    return;
  }
  const signature = [d.enqueued, d.dequeued, d.requeued, d.drained, d.dead, d.depth].join("/");
  const now = Date.now();
  if (it.busy || (signature === it.signature && now - it.loadedAt < 15000) || now - it.loadedAt < 2000) return;
  it.busy = true;
  it.signature = signature;
  loadItems(d.name).finally(() => {
    it.busy = false;
    it.loadedAt = Date.now();
  });
}

async function loadItems(name) {
  let peek;
  let dead;
  try {
    [peek, dead] = await Promise.all([api(`${q(name)}/messages?limit=10`), api(`${q(name)}/dead?limit=50`)]);
  } catch (e) {
    if (e.status !== 404 && e.status !== 401) setText("peek-note", `Could not load items: ${e.message}`);
    return;
  }
  if (state.selected !== name) return;
  const now = Date.now();
  $("peek").replaceChildren(
    ...peek.messages.map((m) => {
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = m.body;
      code.title = m.body;
      const age = document.createElement("span");
      age.className = "age";
      age.dataset.since = String(Date.parse(m.creationTimestamp));
      age.textContent = fmtDuration((now - Number(age.dataset.since)) / 1000);
      age.title = `enqueued ${m.creationTimestamp}`;
      li.append(code, age);
      return li;
    }),
  );
  const depth = state.rows.get(name)?.data?.depth ?? peek.messages.length;
  setText("peek-note", peek.messages.length === 0 ? "Nothing ready." : depth > peek.messages.length ? `… and ${fmtCount(depth - peek.messages.length)} more.` : "");
  $("dead").replaceChildren(
    ...dead.messages.map((m) => {
      const tr = document.createElement("tr");
      const body = document.createElement("td");
      const code = document.createElement("code");
      code.textContent = m.body;
      code.title = m.body;
      body.append(code);
      const attempts = document.createElement("td");
      attempts.textContent = String(m.attempts);
      const since = document.createElement("td");
      since.className = "age";
      since.dataset.since = String(Date.parse(m.deadAt));
      since.textContent = fmtDuration((now - Number(since.dataset.since)) / 1000);
      since.title = m.deadAt;
      tr.append(body, attempts, since);
      return tr;
    }),
  );
  const total = state.rows.get(name)?.data?.dead ?? dead.messages.length;
  setText("dead-note", dead.messages.length === 0 ? "None." : total > dead.messages.length ? `… and ${fmtCount(total - dead.messages.length)} more.` : "");
}

// ---------- leases ----------

const LEASE_LIMIT = 100;

/** Our best guess of the server's clock: lease times are the server's, our clock may be off. A
 * snapshot is at most a second old when it arrives, so the largest recent difference is the
 * closest. */
function serverNow() {
  return Date.now() + (state.skews.length ? Math.max(...state.skews) : 0);
}

function resetLeases(name) {
  // A new record each time: answers meant for the old one are dropped on arrival.
  state.leases = { name, list: [], trs: new Map(), signature: "", loadedAt: 0, busy: false, seq: 0, loaded: false, releasing: new Set() };
  $("leases").replaceChildren();
  setText("leases-note", "");
}

/** Reloads the leases when the queue's figures say they changed (at most every 2 s), and every
 * 10 s while any are held (an extend changes no figure). Nothing is asked once the panel closes. */
function refreshLeases(d) {
  const L = state.leases;
  if (!L || L.name !== d.name || L.busy) return;
  if (state.token && (!state.session || !covers(d.name))) {
    // Asking what the token may do; or its glob does not hold this queue: not this token's
    // queue, so not shown (with --public-reads the server would answer anyone).
    if (state.session) setText("leases-note", outsideNote(d.name));
    return;
  }
  const signature = [d.inflight, d.dequeued, d.acked, d.requeued, d.dead].join("/");
  const age = Date.now() - L.loadedAt;
  if (signature !== L.signature ? age < 2000 : d.inflight === 0 || age < 10_000) return;
  L.signature = signature;
  loadLeases(L);
}

async function loadLeases(L) {
  const seq = ++L.seq; // a later load (after a release) overrides one under way
  L.busy = true;
  try {
    const data = await api(`${q(L.name)}/leases?limit=${LEASE_LIMIT}`);
    if (state.leases !== L || seq !== L.seq) return;
    L.list = data?.leases ?? [];
    L.loaded = true;
    renderLeases(L);
  } catch (e) {
    if (state.leases !== L || seq !== L.seq) return;
    L.signature = ""; // try again in 2 s
    if (e.status !== 404 && e.status !== 401) setText("leases-note", `Could not load leases: ${e.message}`);
  } finally {
    if (seq === L.seq) {
      L.busy = false;
      L.loadedAt = Date.now();
    }
  }
}

const shortId = (id) => `…${id.slice(-6)}`;

function makeLeaseRow(L, l) {
  const tr = document.createElement("tr");
  tr.dataset.lease = l.id;
  const item = document.createElement("td");
  item.className = "item";
  const code = document.createElement("code");
  code.textContent = shortId(l.itemId);
  item.title = l.itemId;
  item.append(code);
  const consumer = document.createElement("td");
  consumer.className = "consumer";
  if (l.consumer == null) {
    consumer.classList.add("anon");
    consumer.textContent = "—";
    consumer.title = "The consumer gave no name (X-Memq-Consumer)";
  } else {
    // Pod names differ at their end: a long name is cut in its middle (app.css), never its end.
    const c = l.consumer;
    if (c.length > 9) {
      const wrap = document.createElement("span");
      wrap.className = "mid";
      const head = document.createElement("span");
      head.textContent = c.slice(0, -7);
      const tail = document.createElement("span");
      tail.textContent = c.slice(-7);
      wrap.append(head, tail);
      consumer.append(wrap);
    } else {
      consumer.textContent = c;
    }
    consumer.title = c;
  }
  const attempt = document.createElement("td");
  attempt.className = "attempt";
  attempt.textContent = String(l.attempt);
  const held = document.createElement("td");
  held.className = "held";
  held.title = `leased at ${l.leasedAt}`;
  const expires = document.createElement("td");
  expires.className = "expires";
  const actions = document.createElement("td");
  actions.className = "release";
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "btn small danger";
  btn.textContent = "Release";
  btn.title = "Give the item back to the queue now (nack)";
  btn.setAttribute("aria-label", `Release the lease on item ${shortId(l.itemId)}`);
  btn.addEventListener("click", () => releaseLease(L, l));
  actions.append(btn);
  tr.append(item, consumer, attempt, held, expires, actions);
  return { tr, held, expires, btn, since: Date.parse(l.leasedAt), until: 0, expiresAt: "" };
}

function renderLeases(L) {
  const trs = new Map();
  const rows = L.list.map((l) => {
    const r = L.trs.get(l.id) || makeLeaseRow(L, l);
    trs.set(l.id, r);
    if (r.expiresAt !== l.expiresAt) {
      // An extend moves it.
      r.expiresAt = l.expiresAt;
      r.until = Date.parse(l.expiresAt);
      r.expires.title = `expires at ${l.expiresAt}`;
    }
    permit(r.btn, denied("consume", L.name), L.releasing.has(l.id));
    return r.tr;
  });
  L.trs = trs;
  const tbody = $("leases");
  const shown = tbody.children;
  if (rows.length !== shown.length || rows.some((tr, i) => tr !== shown[i])) {
    const focused = document.activeElement;
    tbody.replaceChildren(...rows);
    if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
  }
  tickLeases();
}

/** The times of the leases shown, and the note under them; once a second, with the snapshots. */
function tickLeases() {
  const L = state.leases;
  if (!L?.loaded) return;
  const now = serverNow();
  for (const r of L.trs.values()) {
    const held = fmtDuration(Math.floor((now - r.since) / 1000));
    if (r.held.textContent !== held) r.held.textContent = held;
    const left = (r.until - now) / 1000;
    const text = left <= 0 ? "expired" : fmtDuration(Math.ceil(left));
    if (r.expires.textContent !== text) {
      r.expires.textContent = text;
      r.expires.classList.toggle("expired", left <= 0);
    }
  }
  const n = L.list.length;
  const inflight = state.rows.get(L.name)?.data?.inflight ?? n;
  setText("leases-note", n === 0 ? "No leases." : n >= LEASE_LIMIT && inflight > n ? `First ${n} of ${inflight.toLocaleString()} in flight (oldest first).` : "");
}

/** Release: the item goes back to the front of the queue, this delivery not counted as an
 * attempt (`POST .../release`), so a release never makes a dead letter. One request per lease,
 * however often the button is clicked. */
function releaseLease(L, l) {
  if (L.releasing.has(l.id) || state.leases !== L) return;
  const item = shortId(l.itemId);
  const who = l.consumer == null ? "an unnamed consumer" : l.consumer;
  act(
    async () => {
      if (L.releasing.has(l.id)) return;
      L.releasing.add(l.id);
      const r = L.trs.get(l.id);
      if (r) permit(r.btn, null, true);
      try {
        const answer = await api(`${q(L.name)}/release`, { method: "POST", body: JSON.stringify([l.id]), type: "application/json" });
        const result = answer?.results?.[0];
        if (result?.status !== 200) {
          throw new ApiError(result?.status ?? 0, result?.code, `The lease on item ${item} already ended: acked, released or expired.`);
        }
      } catch (e) {
        if (!(e.status === 404 || e.status === 410)) {
          // Nothing changed: the operator may try again.
          L.releasing.delete(l.id);
          if (r) permit(r.btn, denied("consume", L.name));
        }
        throw e;
      } finally {
        if (state.leases === L) loadLeases(L);
      }
    },
    `Released item ${item}: it is ready again.`,
    `Release the lease of ${who} on item ${item} (attempt ${l.attempt})? The item goes back to the front of ${L.name}, and this delivery does not count as an attempt. The consumer's ack or nack for it will fail.`,
  );
}

// ---------- where is my item ----------

// An item id as the enqueue answers it: a ULID, Crockford's base32 (no I, L, O, U). Anything
// else is a producer key (the ?id= of an enqueue).
const ULID_RE = /^[0-9A-HJKMNP-TV-Z]{26}$/i;
const ITEM_STATES = new Set(["ready", "delayed", "leased", "dead"]);
let findSeq = 0; // answers to an older search, or for another queue, are dropped on arrival
let finding = false; // a lookup is out: Find stays off until it answers

function resetFind() {
  findSeq++;
  $("find-result").hidden = true;
  $("find-result").removeAttribute("aria-busy");
  $("find-found").hidden = true;
  $("find-msg").hidden = true;
  finding = false;
  permit($("find-submit"), state.selected ? denied("read", state.selected) : null);
}

async function findItem() {
  const name = state.selected;
  const text = $("find-input").value.trim();
  if (!name || !text || !canWrite() || denied("read", name)) {
    $("find-input").focus();
    return;
  }
  const path = ULID_RE.test(text)
    ? `${q(name)}/items/${text.toUpperCase()}`
    : `${q(name)}/items?key=${encodeURIComponent(text)}`;
  const seq = ++findSeq;
  finding = true;
  permit($("find-submit"), null, true);
  $("find-result").setAttribute("aria-busy", "true");
  try {
    const item = await api(path);
    if (seq === findSeq) showFound(item);
  } catch (e) {
    if (seq !== findSeq) return;
    if (e.status === 401) {
      resetFind(); // the page asks for the token
      return;
    }
    // 404: the server says what may have become of it; 400: what is wrong with the id.
    showFindMessage(e instanceof ApiError ? e.message : `Could not look it up: ${e.message}`, e.status === 404);
  } finally {
    if (seq === findSeq) {
      finding = false;
      permit($("find-submit"), denied("read", name));
      $("find-result").removeAttribute("aria-busy");
    }
  }
}

function showFindMessage(text, notFound) {
  const msg = $("find-msg");
  msg.textContent = text;
  msg.className = notFound ? "find-msg" : "find-msg error";
  msg.hidden = false;
  $("find-found").hidden = true;
  $("find-result").hidden = false;
}

/** A phrase whose time runs on: "expires in 42s", then (once passed) `past`. Counted down with
 * the snapshots, on the server's clock as far as we know it; screen readers hear it once. */
function countdown(iso, lead, past) {
  const span = document.createElement("span");
  span.dataset.until = String(Date.parse(iso));
  span.dataset.lead = lead;
  span.dataset.past = past;
  span.setAttribute("aria-live", "off");
  span.title = iso;
  return span;
}

/** "enqueued 3m ago", counted up with the snapshots. */
function ago(iso, lead) {
  const span = document.createElement("span");
  span.dataset.since = String(Date.parse(iso));
  span.dataset.lead = lead;
  span.setAttribute("aria-live", "off");
  span.title = iso;
  return span;
}

function wherePhrase(it) {
  switch (it.state) {
    case "ready": {
      const n = it.position;
      if (n == null) return [];
      const span = document.createElement("span");
      span.textContent = n === 0 ? "next" : `${n.toLocaleString()} ahead`;
      span.title = n === 0 ? "The next dequeue takes it" : `${n.toLocaleString()} items are handed out before it`;
      return [span];
    }
    case "delayed":
      return it.readyAt ? [countdown(it.readyAt, "ready in ", "ready by now")] : [];
    case "leased": {
      const l = it.lease || {};
      const who = document.createElement("span");
      who.className = "find-consumer";
      if (l.consumer == null) {
        who.classList.add("anon");
        who.textContent = "—";
        who.title = "The consumer gave no name (X-Memq-Consumer)";
      } else {
        who.textContent = l.consumer;
        who.title = l.consumer;
      }
      const parts = ["held by ", who, `, attempt ${l.attempt ?? it.attempts}`];
      if (l.expiresAt) parts.push(", ", countdown(l.expiresAt, "expires in ", "lease expired"));
      return parts;
    }
    case "dead": {
      if (!it.deadAt) return [];
      const at = new Date(it.deadAt);
      const today = at.toDateString() === new Date().toDateString();
      const span = document.createElement("span");
      span.textContent = `dead since ${today ? at.toLocaleTimeString() : at.toLocaleString()}`;
      span.title = it.deadAt;
      return [span];
    }
    default:
      return [];
  }
}

function showFound(it) {
  const badge = $("find-state");
  badge.textContent = it.state;
  badge.className = `badge state-${ITEM_STATES.has(it.state) ? it.state : "other"}`;
  $("find-where").replaceChildren(...wherePhrase(it));
  const n = it.attempts ?? 0;
  const meta = [n === 0 ? "not handed out yet" : `${n.toLocaleString()} attempt${n === 1 ? "" : "s"}`];
  if (it.enqueuedAt) meta.push(" · ", ago(it.enqueuedAt, "enqueued "));
  $("find-meta").replaceChildren(...meta);
  $("find-id").textContent = it.id;
  $("find-id").title = `item id ${it.id}`;
  $("find-msg").hidden = true;
  $("find-found").hidden = false;
  $("find-result").hidden = false;
  tickFind();
}

/** The times of the item found; once a second, with the snapshots. */
function tickFind() {
  if ($("find-result").hidden) return;
  const now = serverNow();
  for (const el of document.querySelectorAll("#find-result [data-until]")) {
    const left = (Number(el.dataset.until) - now) / 1000;
    const text = left > 0 ? el.dataset.lead + fmtDuration(Math.ceil(left)) : el.dataset.past;
    if (el.textContent !== text) el.textContent = text;
  }
  for (const el of document.querySelectorAll("#find-result [data-since]")) {
    const text = `${el.dataset.lead}${fmtDuration(Math.floor((now - Number(el.dataset.since)) / 1000))} ago`;
    if (el.textContent !== text) el.textContent = text;
  }
}

// ---------- actions ----------

function toast(text, bad = false) {
  const el = $("toast");
  el.textContent = text;
  el.classList.toggle("bad", bad);
  el.setAttribute("role", bad ? "alert" : "status");
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), bad ? 7000 : 3500);
}

async function act(fn, done, question) {
  if (question && !window.confirm(question)) return;
  try {
    const result = await fn();
    if (done) toast(typeof done === "function" ? done(result) : done);
    state.items.loadedAt = 0;
    state.items.signature = "";
  } catch (e) {
    if (e.status !== 401) toast(e.message, true);
  }
}

function selectedRow() {
  return state.rows.get(state.selected)?.data;
}

function wireActions() {
  $("a-pause").addEventListener("click", () => {
    const d = selectedRow();
    if (!d) return;
    const verb = d.paused ? "resume" : "pause";
    act(() => api(`${q(d.name)}/${verb}`, { method: "POST" }), `${d.paused ? "Resumed" : "Paused"} ${d.name}.`);
  });
  $("a-drain").addEventListener("click", () => {
    const d = selectedRow();
    if (!d) return;
    const n = d.depth + d.delayed;
    act(
      () => api(`${q(d.name)}/drain`, { method: "POST" }),
      `Drained ${d.name}.`,
      `Drain ${d.name}? This drops its ${n.toLocaleString()} ready and delayed items. Items in flight and dead letters stay.`,
    );
  });
  $("a-requeue").addEventListener("click", () => {
    const d = selectedRow();
    if (!d) return;
    act(() => api(`${q(d.name)}/dead/requeue`, { method: "POST" }), (r) => `Requeued ${fmtCount(r?.count ?? 0)} dead letters of ${d.name}.`);
  });
  $("a-purge").addEventListener("click", () => {
    const d = selectedRow();
    if (!d) return;
    act(
      () => api(`${q(d.name)}/dead`, { method: "DELETE" }),
      (r) => `Purged ${fmtCount(r?.count ?? 0)} dead letters of ${d.name}.`,
      `Purge the ${d.dead.toLocaleString()} dead letters of ${d.name}? They are gone for good.`,
    );
  });
  $("a-delete").addEventListener("click", () => {
    const d = selectedRow();
    if (!d) return;
    act(
      async () => {
        await api(q(d.name), { method: "DELETE" });
        select(null);
      },
      `Deleted ${d.name}.`,
      `Delete queue ${d.name} with its ${(d.depth + d.delayed + d.inflight + d.dead).toLocaleString()} items? Leases on it stop working.`,
    );
  });
  $("enqueue-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = state.selected;
    const text = $("enqueue-text").value;
    if (!name || !text.trim()) return;
    act(
      async () => {
        const r = await api(`${q(name)}/enqueue?batch=lines`, { method: "POST", body: text, type: "text/plain; charset=utf-8" });
        $("enqueue-text").value = "";
        return r;
      },
      (r) => `Added ${fmtCount(r.count)} item${r.count === 1 ? "" : "s"} to ${name}${r.duplicates ? ` (${r.duplicates} duplicates skipped)` : ""}.`,
    );
  });
  $("enqueue-text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $("enqueue-form").requestSubmit();
    }
  });
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("create-name").value.trim();
    if (!name) return;
    act(
      async () => {
        await api(q(name), { method: "PUT" });
        $("create-name").value = "";
        select(name);
      },
      `Created ${name}.`,
    );
  });
  $("detail-close").addEventListener("click", () => select(null));
  // A form: Enter in the input submits it.
  $("find-form").addEventListener("submit", (e) => {
    e.preventDefault();
    findItem();
  });
}

// ---------- token ----------

let asking = null;

/** Shows what this tab may do: without a token (with --public-reads) the changes are not
 * offered at all; with one, those its role or queues do not allow are off, saying why. */
function applyAuthView() {
  document.body.classList.toggle("readonly", !canWrite());
  for (const el of document.querySelectorAll(".write")) el.hidden = !canWrite();
  const signIn = $("sign-in");
  signIn.hidden = AUTH === "open";
  signIn.textContent = state.token ? "Switch token" : "Sign in";
  signIn.title = state.token ? "Sign in with another token" : "";
  const s = state.session;
  const label = $("session");
  label.hidden = AUTH === "open" || !s;
  if (s && AUTH !== "open") {
    const part = (cls, text) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      return span;
    };
    label.replaceChildren(part("s-name", s.token ?? "no token"), " · ", part("s-role", s.role), " · ", part("s-queues", s.queues));
    label.title = `Signed in with token ${s.token}: a ${s.role} token for queues ${s.queues}`;
  }
  const admin = denied("admin");
  permit($("create-name"), admin);
  permit($("create-submit"), admin);
  if (!canWrite()) resetFind();
  applyQueuePermissions();
  probeJobs();
}

/** Shows the token dialog; resolves true once a token the server takes is stored. */
function askToken(why) {
  if (asking) return asking;
  const dialog = $("token-dialog");
  $("token-error").textContent = why || "";
  $("token-input").value = "";
  asking = new Promise((resolve) => {
    const finish = (ok) => {
      $("token-form").onsubmit = null;
      $("token-cancel").onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      asking = null;
      resolve(ok);
    };
    $("token-form").onsubmit = async (e) => {
      e.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      // Needs a token even with --public-reads, changes nothing, and says what the token may do.
      let session = null;
      try {
        session = await fetchSession(token);
      } catch {
        $("token-error").textContent = "The server cannot be reached right now.";
        return;
      }
      if (!session) {
        $("token-error").textContent = "The server refused that token.";
        $("token-input").select();
        return;
      }
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      setSession(session);
      finish(true);
    };
    $("token-cancel").onclick = () => finish(false);
    dialog.oncancel = (e) => {
      e.preventDefault();
      finish(false);
    };
  });
  dialog.showModal();
  $("token-input").focus();
  return asking;
}

async function signIn(why) {
  const ok = await askToken(why);
  applyAuthView();
  if (ok) {
    connect();
    if (state.selected) {
      state.items.loadedAt = 0;
      loadHistory(state.selected);
    }
  }
}

/** The server refused our token (it changed, or we had none): forget it and ask again. */
function tokenRefused() {
  const had = Boolean(state.token);
  state.token = "";
  state.session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  applyAuthView();
  signIn(had ? "The server refused the stored token; it may have changed." : "");
}

// ---------- Kubernetes Jobs (shown only when the server has a launcher) ----------

const jobsPath = "/jobs";
let jobsTimer = 0;

/** Shows the panel and follows the Jobs when the token may (an admin token for every queue);
 * otherwise asks nothing of /jobs and says why. Again whenever the token or its rights change. */
function probeJobs() {
  // Jobs are not a public read: without a token (and with one required) there is nothing to show.
  if (!JOBS) return;
  $("jobs").hidden = !canWrite();
  const why = denied("jobs");
  for (const id of ["job-queue", "job-parallelism", "job-submit"]) permit($(id), why);
  if (why) {
    clearInterval(jobsTimer);
    jobsTimer = 0;
    $("jobs-rows").replaceChildren();
    const s = state.session;
    $("jobs-empty").textContent = s
      ? `Consumer Jobs are listed and launched with an admin token for every queue (*): token ${s.token} is a ${s.role} token for queues ${s.queues}.`
      : "";
    $("jobs-empty").hidden = !s;
    return;
  }
  if (jobsTimer) return;
  jobsTimer = setInterval(refreshJobs, 5000);
  refreshJobs();
}

/** Reloads the Jobs; while the API server refuses or cannot be reached, the panel says why. */
async function refreshJobs() {
  let resp;
  try {
    resp = await fetch(jobsPath, { headers: authHeaders(), cache: "no-store" });
  } catch {
    return; // offline: the connection pill says so already
  }
  const data = await resp.json().catch(() => null);
  if (!jobsTimer) return; // the token changed meanwhile
  if (!resp.ok) {
    if (resp.status === 403) refreshSession();
    $("jobs-rows").replaceChildren();
    $("jobs-empty").textContent = data?.message || `Jobs cannot be listed: ${resp.status}`;
    $("jobs-empty").hidden = false;
    return;
  }
  $("jobs-empty").textContent = "No consumer Jobs.";
  renderJobs(data);
}

/** The server's word on a refused Jobs request (a 403 says what the token lacks). */
async function jobsError(resp, what) {
  const data = await resp.json().catch(() => null);
  if (resp.status === 401) tokenRefused();
  if (resp.status === 403) refreshSession();
  return new ApiError(resp.status, data?.code, data?.message || `${what}: ${resp.status}`);
}

function jobList(data) {
  if (Array.isArray(data)) return data;
  return data?.jobs || data?.items || [];
}

function renderJobs(data) {
  const now = Date.now();
  const rows = jobList(data).map((j) => {
    const name = j.name ?? j.metadata?.name ?? "?";
    const status = j.status || {};
    const started = Date.parse(j.startTime ?? status.startTime ?? "");
    const finished = Date.parse(j.completionTime ?? status.completionTime ?? "");
    const tr = document.createElement("tr");
    const cells = [
      name,
      j.queue ?? "",
      String(j.parallelism ?? j.spec?.parallelism ?? ""),
      String(j.active ?? status.active ?? 0),
      String(j.succeeded ?? status.succeeded ?? 0),
      String(j.failed ?? status.failed ?? 0),
      Number.isFinite(started) ? fmtDuration(((Number.isFinite(finished) ? finished : now) - started) / 1000) + (Number.isFinite(finished) ? " (done)" : "") : "–",
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i < 2) td.className = "name";
      td.textContent = text;
      td.title = text;
      tr.append(td);
    });
    const actions = document.createElement("td");
    if (canWrite()) {
      const del = document.createElement("button");
      del.type = "button";
      del.className = "btn danger";
      del.textContent = "Delete";
      permit(del, denied("jobs"));
      del.addEventListener("click", () =>
        act(
          async () => {
            const resp = await fetch(`${jobsPath}/${encodeURIComponent(name)}`, { method: "DELETE", headers: authHeaders() });
            if (!resp.ok) throw await jobsError(resp, `Deleting ${name} failed`);
            refreshJobs();
          },
          `Deleted Job ${name}.`,
          `Delete Job ${name} and its pods?`,
        ),
      );
      actions.append(del);
    }
    tr.append(actions);
    return tr;
  });
  $("jobs-rows").replaceChildren(...rows);
  $("jobs-empty").hidden = rows.length > 0;
}

function wireJobs() {
  // Suggestions: the first names (in natural order) that hold what was typed.
  const suggest = () => {
    const typed = $("job-queue").value.trim().toLowerCase();
    const names = [];
    for (const rec of state.byName) {
      if (typed && !rec.lower.includes(typed)) continue;
      names.push(rec.name);
      if (names.length === 200) break;
    }
    $("queue-names").replaceChildren(
      ...names.map((n) => {
        const o = document.createElement("option");
        o.value = n;
        return o;
      }),
    );
  };
  $("job-queue").addEventListener("focus", suggest);
  $("job-queue").addEventListener("input", suggest);
  $("job-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const queue = $("job-queue").value.trim();
    const parallelism = Number($("job-parallelism").value);
    if (!queue || denied("jobs")) return;
    act(
      async () => {
        const resp = await fetch(jobsPath, {
          method: "POST",
          headers: authHeaders({ "Content-Type": "application/json" }),
          body: JSON.stringify({ queue, parallelism }),
        });
        if (!resp.ok) throw await jobsError(resp, "Launching failed");
        refreshJobs();
      },
      `Launched a Job for ${queue} with parallelism ${parallelism}.`,
    );
  });
}

// ---------- start ----------

function wireTable() {
  $("rows").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-queue]");
    if (tr) select(tr.dataset.queue);
  });
  for (const btn of document.querySelectorAll("#queue-table thead button[data-sort]")) {
    btn.addEventListener("click", () => setSort(btn.dataset.sort));
  }
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value.trim().toLowerCase();
    arrange(false);
  });
  $("table-wrap").addEventListener("scroll", renderSoon, { passive: true });
  document.addEventListener("keydown", (e) => {
    if ($("token-dialog").open) return;
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName);
    if (e.key === "/" && !typing) {
      e.preventDefault();
      $("filter").focus();
    } else if (e.key === "Escape" && state.selected && !typing) {
      const name = state.selected;
      select(null);
      state.rows.get(name)?.view?.tr.querySelector(".qname")?.focus();
    }
  });
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawCharts, 100);
    renderSoon();
  });
}

function start() {
  wireTable();
  wireActions();
  wireJobs();
  $("sign-in").addEventListener("click", () => signIn());
  applyAuthView();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("queue");
  if (wanted) select(wanted);
  // What the token may do, now and then again: the server re-reads its tokens file.
  setInterval(refreshSession, 30_000);
  if (needsToken()) {
    setConn("connecting", "signed out");
    signIn();
    return;
  }
  refreshSession(); // a token kept from before in this tab
  connect();
}

start();
