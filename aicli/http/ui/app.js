// The aicli dashboard: a client of the public HTTP API, nothing more.
//
// The token lives in sessionStorage (this tab only) and leaves the page only as an
// `Authorization: Bearer` header on fetch calls, never in a URL. The DOM is built with
// createElement and textContent only: task output and tool input are data, never markup.

import { hiddenWarning, shown, visibleText } from "./hidden.js";

const TOKEN_KEY = "aicli.token";
const POLL_APPROVALS_MS = 2000;
const POLL_SESSION_MS = 3000;
const PAGE = 25;
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const CANCELLABLE = new Set(["pending", "running"]);

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

const auth = {
  get signedIn() { return sessionStorage.getItem(TOKEN_KEY) !== null; },
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  save(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

function headersFor(extra, token = auth.token) {
  const headers = { Accept: "application/json", ...extra };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: say what we know */ }
  const error = body && body.error;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, error.code, error.message, error.details);
  }
  return new ApiError(response.status, `http_${response.status}`,
    `The server answered ${response.status} ${response.statusText}.`);
}

// One call: a JSON body in and out; an error body becomes an ApiError with its message.
async function api(method, path, { body, query, signal, token } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const extra = body === undefined ? {} : { "Content-Type": "application/json" };
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: headersFor(extra, token === undefined ? auth.token : token),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", `The server could not be reached (${err.message}).`);
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (token === undefined) signOutOn401(error);
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

// A 401 to a call made with the saved token: that token is no longer good anywhere. Without
// one, the service was open and is no more (its first principal was created): say that.
function signOutOn401(error) {
  if (error.status === 401 && auth.signedIn) {
    signOut(auth.token
      ? `Your token is no longer accepted (401): ${error.message}`
      : "This service is no longer open: it now needs an API token (401). Sign in with one.");
  }
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- DOM helpers

// h("tag.class", {attr: value, onclick: fn}, child, ...): children are nodes or text.
function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }

function badge(status) {
  return h(`span.badge.s-${String(status).replace(/[^a-z_]/gi, "")}`, { text: status });
}

function shortId(id) { return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : "—"; }

function when(text) {
  if (!text) return h("span.muted", { text: "—" });
  const date = new Date(text);
  return h("time", { datetime: text, title: text, text: date.toLocaleString() });
}

function money(value) {
  const n = Number(value || 0);
  return `$${n.toFixed(n && n < 0.01 ? 5 : 2)}`;
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

// A tool's input as a person reads it before deciding: hidden characters as markers, and in
// the order the program reads it (bidi-override in the stylesheet: no reordering by script).
function toolInput(value) {
  return h("pre.tool-input", {}, shown(pretty(value)));
}

function counts(taskCounts) {
  const parts = [];
  for (const [status, n] of Object.entries(taskCounts || {})) {
    if (n) parts.push(h("span.count-item", {}, badge(status), ` ${n}`));
  }
  return parts.length ? h("span.counts", {}, parts) : h("span.muted", { text: "none" });
}

function field(label, control, hint) {
  return h("label.field", {}, h("span.label", { text: label }), control,
    hint ? h("span.hint", { text: hint }) : null);
}

// A definition list; a pair whose value is undefined is left out, null shows as a dash.
function details(pairs, cls = "") {
  const list = h(`dl.details${cls}`);
  for (const [term, value] of pairs) {
    if (value === undefined) continue;
    list.append(h("dt", { text: term }), append(h("dd"), [value ?? h("span.muted", { text: "—" })]));
  }
  return list;
}

function select(name, options, value) {
  const node = h("select", { name, id: name });
  for (const [optionValue, label] of options) {
    node.append(h("option", { value: optionValue, text: label, selected: optionValue === value }));
  }
  return node;
}

// A button that runs an async action once at a time, disabled meanwhile.
function action(label, run, cls = "") {
  const button = h(`button${cls}`, { type: "button", text: label });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try { await run(); } catch (err) { showError(err); } finally { button.disabled = false; }
  });
  return button;
}

// ---------------------------------------------------------------- alerts

const alertBox = document.getElementById("alert");
const alertText = document.getElementById("alert-text");
document.getElementById("alert-close").addEventListener("click", hideAlert);

function showAlert(message, kind = "error") {
  alertBox.className = `alert ${kind}`;
  alertText.textContent = message;
  alertBox.hidden = false;
}

function hideAlert() { alertBox.hidden = true; alertText.textContent = ""; }

function showError(err) {
  if (err && err.name === "AbortError") return;
  if (err instanceof ApiError) {
    const prefix = err.code === "approval_decided" ? "Already decided: " : "";
    showAlert(`${prefix}${err.message}`, "error");
  } else {
    showAlert(`Something went wrong: ${err && err.message ? err.message : err}`, "error");
  }
}

// ---------------------------------------------------------------- views and routing

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let current = null; // { controller, timers }

function leaveView() {
  if (!current) return;
  current.controller.abort();
  for (const timer of current.timers) clearInterval(timer);
  current = null;
}

function enterView() {
  leaveView();
  current = { controller: new AbortController(), timers: [] };
  return current;
}

function every(view, ms, run) {
  const tick = () => { if (!document.hidden && !view.controller.signal.aborted) run(); };
  view.timers.push(setInterval(tick, ms));
}

function route() {
  let parts;
  try {
    parts = (location.hash.replace(/^#\/?/, "") || "sessions").split("/").map(decodeURIComponent);
  } catch {
    return { view: "not-found" }; // a malformed %-escape: decodeURIComponent throws
  }
  if (parts[0] === "sessions" && parts[1]) return { view: "session", id: parts[1] };
  if (parts[0] === "tasks" && parts[1]) return { view: "task", id: parts[1] };
  if (parts[0] === "approvals") return { view: "approvals" };
  return { view: "sessions" };
}

function go(hash) {
  if (location.hash === hash) render(); else location.hash = hash;
}

function render() {
  hideAlert();
  if (!auth.signedIn) { renderSignIn(); return; }
  nav.hidden = false;
  startApprovalCount();
  const where = route();
  const section = where.view === "approvals" || where.view === "not-found" ? where.view : "sessions";
  for (const link of nav.querySelectorAll("[data-nav]")) {
    const here = link.dataset.nav === section;
    if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const view = enterView();
  clear(main);
  if (where.view === "session") renderSession(view, where.id);
  else if (where.view === "task") renderTask(view, where.id);
  else if (where.view === "approvals") renderApprovals(view);
  else if (where.view === "not-found") renderNotFound();
  else renderSessions(view);
}

function renderNotFound() {
  main.append(h("section.card", { id: "not-found" },
    h("h1", { text: "Not found" }),
    h("p", {}, "The dashboard has nothing at this address. ",
      h("a", { href: "#/sessions", text: "Go to the sessions" }), ".")));
  showAlert("This address could not be read: it has a malformed %-escape.");
}

window.addEventListener("hashchange", render);

// ---------------------------------------------------------------- sign in and out

function renderSignIn(message) {
  leaveView();
  stopApprovalCount();
  nav.hidden = true;
  clear(main);
  // "new-password": browsers ignore "off" on a password field, and would offer to fill in
  // or save a password here.
  const input = h("input", {
    type: "password", name: "token", id: "token", autocomplete: "new-password", spellcheck: "false",
    placeholder: "aicli_…",
  });
  const submit = h("button", { type: "submit", text: "Sign in" });
  const form = h("form.card.signin", { id: "signin-form", novalidate: true },
    h("h1", { text: "Sign in" }),
    h("p.muted", { text: "Paste your aicli API token." }),
    field("API token", input),
    h("div.actions", {}, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    const token = input.value.trim();
    try {
      const me = await api("GET", "/me", { token });
      auth.save(token);
      input.value = "";
      setWho(me);
      if (!location.hash || location.hash === "#/" || location.hash === "#") go("#/sessions");
      else render();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        showAlert(`That token was not accepted (401): ${err.message}`);
      } else {
        showError(err);
      }
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  if (message) showAlert(message);
  input.focus();
}

// Signed in with no token: the service is open, and the page says so while it is.
function setWho(me) {
  const who = document.getElementById("who");
  who.textContent = me ? `${me.name} (${me.role})` : "";
  const open = Boolean(me) && auth.signedIn && !auth.token;
  document.getElementById("open-notice").hidden = !open;
  document.getElementById("sign-out").hidden = open; // no token to forget
}

function signOut(message) {
  auth.clear();
  setWho(null);
  renderSignIn(message);
}

document.getElementById("sign-out").addEventListener("click", () => signOut());

// ---------------------------------------------------------------- the pending-approvals count

let approvalTimer = null;
const approvalCount = document.getElementById("approval-count");

async function refreshApprovalCount() {
  if (!auth.signedIn || document.hidden) return;
  try {
    const page = await api("GET", "/approvals", { query: { status: "pending", limit: 200 } });
    const n = page.data.length;
    approvalCount.textContent = page.has_more ? `${n}+` : String(n);
    approvalCount.classList.toggle("hot", n > 0);
  } catch {
    // The count is a hint; the views show errors.
  }
}

function startApprovalCount() {
  if (approvalTimer) return;
  refreshApprovalCount();
  approvalTimer = setInterval(refreshApprovalCount, POLL_APPROVALS_MS);
}

function stopApprovalCount() {
  clearInterval(approvalTimer);
  approvalTimer = null;
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshApprovalCount(); });

// ---------------------------------------------------------------- a paged list

// A table that loads pages with next_cursor; `columns` are [label, row => node].
function pagedTable({ view, load, columns, empty, rowClass }) {
  const body = h("tbody");
  const table = h("table.list", {},
    h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col", text: label })))),
    body);
  const more = h("button.secondary", { type: "button", text: "Load more", hidden: true });
  const note = h("p.muted.empty", { text: empty, hidden: true });
  let cursor = null;
  let pages = 0;
  // Each reload is a generation: a poll and a filter change may both be in flight, and
  // only the answer to the newest may fill the table (not the old filter's rows).
  let generation = 0;

  function row(item) {
    return h(`tr${rowClass ? `.${rowClass}` : ""}`, { dataset: { id: item.id } },
      columns.map(([label, cell]) => append(h("td", { dataset: { label } }), [cell(item)])));
  }

  async function fetchPage(reset) {
    if (reset) generation += 1;
    const asked = { generation, cursor: reset ? null : cursor };
    const page = await load(asked.cursor, view.controller.signal);
    if (asked.generation !== generation) return; // a newer reload answers instead
    if (!reset && asked.cursor !== cursor) return; // it continued the list a reload replaced
    if (reset) { clear(body); pages = 0; }
    for (const item of page.data) body.append(row(item));
    pages += 1;
    cursor = page.has_more ? page.next_cursor : null;
    more.hidden = !cursor;
    note.hidden = body.children.length > 0;
  }

  more.addEventListener("click", async () => {
    more.disabled = true;
    try { await fetchPage(false); } catch (err) { showError(err); } finally { more.disabled = false; }
  });

  return {
    node: h("div", {}, h("div.table-wrap", {}, table), note, h("div.actions", {}, more)),
    reload: () => fetchPage(true),
    get pages() { return pages; },
  };
}

// ---------------------------------------------------------------- sessions

const dash = () => h("span.muted", { text: "—" });

function processState(s) {
  return h(`span.live.${s.process_alive ? "on" : "off"}`, { text: s.process_alive ? "live" : "stopped" });
}

function sessionsTable(view, statusFilter) {
  return pagedTable({
    view,
    empty: "No sessions yet: open one below.",
    rowClass: "session-row",
    load: (cursor, signal) => api("GET", "/sessions", {
      query: { limit: PAGE, cursor, status: statusFilter.value }, signal,
    }),
    columns: [
      ["Session", (s) => h("div.stack", {},
        h("a.mono.nowrap", { href: `#/sessions/${enc(s.id)}`, text: shortId(s.id), title: s.id }),
        h("span.muted.break", { text: s.workdir }))],
      ["Status", (s) => badge(s.status)],
      ["Owner", (s) => s.owner || dash()],
      ["Node", (s) => (s.node ? h("span.mono", { text: shortId(s.node), title: s.node }) : dash())],
      ["Process", processState],
      ["Cost", (s) => h("span.nowrap", { text: money(s.total_cost_usd) })],
      ["Tasks", (s) => counts(s.task_counts)],
    ],
  });
}

// The form that opens a session; `opened(session)` runs once the server made it.
function openSessionForm(view, opened) {
  const workdir = h("input", { name: "workdir", id: "workdir", required: true, placeholder: "/path/to/project", autocomplete: "off" });
  const approvals = select("approvals", [["off", "off: refuse tools the permissions do not allow"], ["ask", "ask: wait for a person"]], "off");
  const mode = select("permission_mode", [
    ["", "(the CLI's default)"], ["default", "default"], ["acceptEdits", "acceptEdits"],
    ["plan", "plan"], ["bypassPermissions", "bypassPermissions"],
  ], "");
  const model = h("input", { name: "model", id: "model", placeholder: "optional", autocomplete: "off" });
  const open = h("button", { type: "submit", text: "Open session" });
  const form = h("form.card", { id: "open-session-form", novalidate: true },
    h("h2", { text: "Open a session" }),
    h("div.grid", {},
      field("Working directory", workdir),
      field("Approvals", approvals),
      field("Permission mode", mode),
      field("Model", model)),
    h("div.actions", {}, open));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { workdir: workdir.value.trim(), approvals: approvals.value };
    if (mode.value) body.permission_mode = mode.value;
    if (model.value.trim()) body.model = model.value.trim();
    open.disabled = true;
    try {
      const session = await api("POST", "/sessions", { body, signal: view.controller.signal });
      workdir.value = "";
      await opened(session);
    } catch (err) {
      showError(err);
    } finally {
      open.disabled = false;
    }
  });
  return form;
}

function renderSessions(view) {
  const statusFilter = select("session-status", [
    ["", "All"], ["idle,busy", "Open (idle, busy)"], ["idle", "Idle"], ["busy", "Busy"],
    ["closed", "Closed"],
  ], "");
  const list = sessionsTable(view, statusFilter);
  statusFilter.addEventListener("change", () => list.reload().catch(showError));
  const form = openSessionForm(view, async (session) => {
    await list.reload();
    showAlert(`Session ${shortId(session.id)} opened in ${session.workdir}.`, "info");
  });
  main.append(
    h("section.card", {},
      h("div.head", {},
        h("h1", { text: "Sessions" }),
        h("div.tools", {}, field("Status", statusFilter),
          action("Refresh", () => list.reload(), ".secondary"))),
      list.node),
    form);
  list.reload().catch(showError);
}

// ---------------------------------------------------------------- one session

function submitTaskForm(view, sessionId) {
  const command = h("textarea", { name: "command", id: "command", rows: 3, required: true, placeholder: "What should Claude do?" });
  const timeout = h("input", { name: "timeout_s", id: "timeout_s", type: "number", min: "1", step: "any", inputmode: "decimal", placeholder: "none" });
  const submit = h("button", { type: "submit", text: "Submit task" });
  const form = h("form.card", { id: "submit-task-form", novalidate: true },
    h("h2", { text: "Submit a task" }),
    field("Command", command),
    h("div.row", {}, field("Timeout (s), optional", timeout), submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { command: command.value };
    if (timeout.value) body.timeout_s = Number(timeout.value);
    submit.disabled = true;
    try {
      const task = await api("POST", `/sessions/${enc(sessionId)}/tasks`, { body, signal: view.controller.signal });
      command.value = "";
      go(`#/tasks/${enc(task.id)}`);
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function sessionTasksTable(view, sessionId, statusFilter) {
  return pagedTable({
    view,
    empty: "No tasks here.",
    rowClass: "task-row",
    load: (cursor, signal) => api("GET", `/sessions/${enc(sessionId)}/tasks`, {
      query: { limit: PAGE, cursor, status: statusFilter.value }, signal,
    }),
    columns: [
      ["Task", (t) => h("a.mono.nowrap", { href: `#/tasks/${enc(t.id)}`, text: shortId(t.id), title: t.id })],
      ["Status", (t) => badge(t.status)],
      ["Command", (t) => h("span.command", { text: t.command.length > 140 ? `${t.command.slice(0, 140)}…` : t.command })],
      ["Created", (t) => when(t.created_at)],
      ["Cost", (t) => (t.cost_usd === null ? dash() : h("span.nowrap", { text: money(t.cost_usd) }))],
    ],
  });
}

function sessionDetails(s) {
  return details([
    ["Status", badge(s.status)],
    ["Working directory", h("span.mono.break", { text: s.workdir })],
    ["Owner", s.owner],
    ["Node", s.node ? h("span.mono", { text: s.node }) : null],
    ["Process", processState(s)],
    ["Approvals", s.approvals],
    ["Permission mode", s.permission_mode],
    ["Model", s.model],
    ["Claude session", s.claude_session_id ? h("span.mono.break", { text: s.claude_session_id }) : null],
    ["Created", when(s.created_at)],
    ["Last active", when(s.last_active_at)],
    ["Total cost", money(s.total_cost_usd)],
    ["Tasks", counts(s.task_counts)],
  ]);
}

function renderSession(view, id) {
  const info = h("div", {}, h("p.muted", { text: "Loading…" }));
  const form = submitTaskForm(view, id);
  const statusFilter = select("task-status", [
    ["", "All"], ["pending,running", "Active (pending, running)"], ["pending", "Pending"],
    ["running", "Running"], ["completed", "Completed"], ["failed", "Failed"], ["cancelled", "Cancelled"],
  ], "");
  const tasks = sessionTasksTable(view, id, statusFilter);
  statusFilter.addEventListener("change", () => tasks.reload().catch(showError));
  const closeButton = action("Close session", async () => {
    showSession(await api("DELETE", `/sessions/${enc(id)}`, { signal: view.controller.signal }));
    await tasks.reload();
    showAlert("Session closed: its tasks were cancelled and its Claude process stopped.", "info");
  }, ".danger");
  closeButton.id = "close-session";

  function showSession(s) {
    closeButton.hidden = s.status === "closed";
    form.hidden = s.status === "closed";
    clear(info).append(sessionDetails(s));
  }

  async function refresh(withTasks) {
    showSession(await api("GET", `/sessions/${enc(id)}`, { signal: view.controller.signal }));
    if (withTasks) await tasks.reload();
  }

  main.append(
    h("p.crumbs", {}, h("a", { href: "#/sessions", text: "← Sessions" })),
    h("div.split", {},
      h("div", {},
        h("section.card", {},
          h("div.head", {}, h("h1", {}, "Session ", h("span.mono", { text: shortId(id), title: id })),
            h("div.tools", {}, closeButton)),
          info)),
      h("div", {},
        form,
        h("section.card", {},
          h("div.head", {}, h("h2", { text: "Tasks" }),
            h("div.tools", {}, field("Status", statusFilter), action("Refresh", () => refresh(true), ".secondary"))),
          tasks.node))));
  // Follow a working session: its details, and its first page of tasks when that is all we show.
  refresh(true).then(() => {
    every(view, POLL_SESSION_MS, () => { refresh(tasks.pages <= 1).catch(() => {}); });
  }).catch(showError);
}

// ---------------------------------------------------------------- one task and its events

// Splits complete lines off `buffer` into SSE frames: onFrame({id, event, data}) per frame,
// comments (the keep-alive) skipped. Returns what is left: the start of a line.
function sseLines(buffer, state, onFrame) {
  for (;;) {
    const match = /\r\n|\r|\n/.exec(buffer);
    if (!match) return buffer;
    if (match[0] === "\r" && match.index === buffer.length - 1) return buffer; // maybe \r\n split
    const line = buffer.slice(0, match.index);
    buffer = buffer.slice(match.index + match[0].length);
    const { frame } = state;
    if (line === "") {
      state.frame = { id: null, event: "message", data: [] };
      if (frame.data.length) onFrame({ id: frame.id, event: frame.event, data: frame.data.join("\n") });
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let text = colon < 0 ? "" : line.slice(colon + 1);
    if (text.startsWith(" ")) text = text.slice(1);
    if (name === "data") frame.data.push(text);
    else if (name === "event") frame.event = text;
    else if (name === "id") frame.id = text;
  }
}

// Reads an SSE body until it ends. The reader is cancelled however the reading ends (onFrame
// throwing included): that closes the response, which otherwise holds one of the server's
// few stream slots until it times out.
async function readSse(body, onFrame) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const state = { frame: { id: null, event: "message", data: [] } };
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = sseLines(buffer + decoder.decode(value, { stream: true }), state, onFrame);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

async function openEventStream(taskId, last, signal) {
  const headers = headersFor({ Accept: "text/event-stream" });
  if (last > 0) headers["Last-Event-ID"] = String(last);
  const response = await fetch(`/tasks/${enc(taskId)}/events`, {
    headers, signal, cache: "no-store", credentials: "omit",
  });
  if (response.ok) return response;
  const error = await errorOf(response);
  signOutOn401(error);
  if (response.status !== 429 && response.status < 500) throw error; // will not get better
  throw Object.assign(error, { retry: true });
}

// A frame's event with a numeric seq (null without one). Data that is not a JSON object is
// kept as the event's data, to be shown as it came.
function eventOf(frame) {
  let event;
  try { event = JSON.parse(frame.data); } catch { event = frame.data; }
  if (!event || typeof event !== "object" || Array.isArray(event)) {
    event = { type: frame.event, data: event };
  }
  const seq = Number(event.seq ?? frame.id);
  return Number.isFinite(seq) ? { ...event, seq } : null;
}

function isTerminalEvent(event) {
  return event.type === "status" && Boolean(event.data) && TERMINAL.has(event.data.status);
}

async function taskIsTerminal(taskId, signal) {
  try {
    const task = await api("GET", `/tasks/${enc(taskId)}`, { signal });
    return TERMINAL.has(task.status);
  } catch {
    return false; // not known: keep following (a 401 signed out, which stops it)
  }
}

// Follows GET /tasks/{id}/events as SSE until the terminal status event. A dropped
// connection reconnects with Last-Event-ID = the last seq shown, so the server replays only
// what was missed; seqs not above it are dropped too, in case anything comes twice. A
// stream the server ends without the terminal event is followed again only while the
// task is not terminal, plus once after, for what came in between.
async function followEvents(taskId, { signal, onEvent, onState }) {
  let last = 0;
  let failures = 0;
  let reconnects = 0;
  let ended = false;
  let terminal = false;
  while (!signal.aborted && !ended) {
    let closed = false; // by the server, not by an error
    try {
      const response = await openEventStream(taskId, last, signal);
      onState(reconnects ? `live (reconnected ${reconnects}×)` : "live", "live");
      failures = 0;
      await readSse(response.body, (frame) => {
        const event = eventOf(frame);
        if (!event || event.seq <= last) return;
        onEvent(event);
        last = event.seq; // only once shown: an event whose drawing threw comes again
        if (isTerminalEvent(event)) ended = true;
      });
      closed = true;
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && !err.retry) {
        onState("stopped", "off");
        throw err;
      }
    }
    if (closed && !ended && !signal.aborted) {
      if (terminal) ended = true;
      else terminal = await taskIsTerminal(taskId, signal);
    }
    if (ended || signal.aborted) break;
    failures += 1;
    reconnects += 1;
    onState(`reconnecting (${reconnects})…`, "wait");
    await sleep(Math.min(5000, 250 * 2 ** Math.min(failures, 5)), signal);
  }
  if (ended) onState(reconnects ? `ended (reconnected ${reconnects}×)` : "ended", "off");
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// What did not fit the expected shape, as the JSON it came as (a tool use of a kind not
// drawn otherwise may be in it: hidden characters show as markers here too).
function raw(value) {
  let text;
  try { text = JSON.stringify(value, null, 2); } catch { /* not JSON-able */ }
  return h("pre.raw", {}, shown(text ?? String(value)));
}

function textOfToolResult(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part && part.type === "text" ? part.text : pretty(part))).join("\n");
  }
  return pretty(content);
}

function messageBlock(block) {
  if (block.type === "text") return h("p.say", { text: block.text });
  if (block.type === "tool_use") {
    return h("div.tool", {}, h("span.tool-name", {}, "Tool use: ", shown(block.name)),
      hiddenWarning(block.name, block.input), toolInput(block.input));
  }
  if (block.type === "thinking") return h("p.muted", { text: block.thinking || "(thinking)" });
  return raw(block);
}

function toolResultBlock(block) {
  if (block.type === "tool_result") {
    return h(`pre${block.is_error ? ".error" : ""}`, { text: textOfToolResult(block.content) });
  }
  if (block.type === "text") return h("p", { text: block.text });
  return null;
}

// The blocks of a message event, each drawn by `draw`; one that is not an object shows raw.
function blocks(data, draw) {
  if (!Array.isArray(data.content)) return [raw(data)];
  return data.content.map((block) => (isObject(block) ? draw(block) : raw(block)));
}

function resultSummary(data) {
  const bits = [data.subtype, data.is_error ? "error" : null,
    data.num_turns != null ? `${data.num_turns} turns` : null,
    data.duration_ms != null ? `${data.duration_ms} ms` : null,
    data.total_cost_usd != null ? money(data.total_cost_usd) : null].filter(Boolean);
  return [h("span", { text: `Result: ${bits.join(" · ")}` })];
}

function eventBody(event) {
  const data = event.data;
  if (!isObject(data)) return [raw(data)];
  const a = isObject(data.approval) ? data.approval : {};
  switch (event.type) {
    case "status":
      return [h("span", { text: "Status: " }), badge(data.status)];
    case "assistant":
    case "user":
      return blocks(data, messageBlock);
    case "tool_result":
      return blocks(data, toolResultBlock);
    case "result":
      return resultSummary(data);
    case "approval_requested":
      return [h("span", {}, "Approval requested: ", shown(a.tool_name), ` (${a.kind}) — `,
        h("a", { href: "#/approvals", text: "decide in Approvals" })),
      hiddenWarning(a.tool_name, a.input), toolInput(a.input)];
    case "approval_decided":
      return [h("span", {}, "Approval decided: ", badge(a.status), " ", shown(a.tool_name),
        ` by ${a.decided_by || "—"}`),
      a.message ? h("p", {}, shown(a.message)) : null];
    default:
      return [raw(data)];
  }
}

function eventItem(event) {
  const type = String(event.type);
  let body;
  try { body = eventBody(event); } catch { body = [raw(event.data)]; }
  return h(`li.event.t-${type.replace(/[^a-z_]/gi, "")}`, { dataset: { seq: event.seq, type } },
    h("div.event-head", {}, h("span.seq", { text: `#${event.seq}` }),
      h("span.type", { text: type }), when(event.created_at)),
    h("div.event-body", {}, body));
}

function taskDetails(t) {
  return details([
    ["Status", h("span", { id: "task-status" }, badge(t.status))],
    ["Waiting for", t.awaiting_approval ? h("a", { href: "#/approvals", text: "an approval" }) : undefined],
    ["Queue position", t.queue_position ?? undefined],
    ["Created", when(t.created_at)],
    ["Started", when(t.started_at)],
    ["Completed", when(t.completed_at)],
    ["Cost", t.cost_usd === null ? null : money(t.cost_usd)],
    ["Turns", t.num_turns],
    ["Duration", t.duration_ms === null ? null : `${t.duration_ms} ms`],
    ["Tokens", t.usage ? `${t.usage.input_tokens} in, ${t.usage.output_tokens} out` : null],
    ["Timeout", t.timeout_s === null ? undefined : `${t.timeout_s} s`],
  ]);
}

function taskOutput(t) {
  return [
    h("h2", { text: "Command" }), h("pre.command-text", { text: t.command }),
    t.output !== null ? [h("h2", { text: "Output" }), h("pre.output", { id: "task-output", text: t.output })] : null,
    t.error !== null ? [h("h2", { text: "Error" }), h("p.error-text", { id: "task-error", text: t.error })] : null,
  ];
}

function taskCrumbs(t) {
  const crumbs = [h("a", { href: "#/sessions", text: "← Sessions" })];
  if (t) {
    crumbs.push(" / ", h("a", { href: `#/sessions/${enc(t.session_id)}`, text: `session ${shortId(t.session_id)}` }));
  }
  return crumbs;
}

function renderTask(view, id) {
  const info = h("div", {}, h("p.muted", { text: "Loading…" }));
  const output = h("div");
  const crumbs = h("p.crumbs", {}, taskCrumbs(null));
  const cancel = action("Cancel task", async () => {
    showTask(await api("DELETE", `/tasks/${enc(id)}`, { signal: view.controller.signal }));
  }, ".danger");
  cancel.id = "cancel-task";
  cancel.hidden = true;
  const events = h("ol.events", { id: "events" });
  const streamState = h("span.live.wait", { id: "stream-state", text: "connecting…" });

  function showTask(t) {
    cancel.hidden = !CANCELLABLE.has(t.status);
    append(clear(crumbs), taskCrumbs(t));
    clear(info).append(taskDetails(t));
    append(clear(output), taskOutput(t));
  }

  const refresh = async () => showTask(await api("GET", `/tasks/${enc(id)}`, { signal: view.controller.signal }));

  function addEvent(event) {
    events.append(eventItem(event));
    // A status change: the task's details change with it.
    const type = String(event.type);
    if (type === "status" || type.startsWith("approval_")) refresh().catch(() => {});
  }

  main.append(crumbs, h("div.split", {},
    h("section.card", {},
      h("div.head", {}, h("h1", {}, "Task ", h("span.mono", { text: shortId(id), title: id })),
        h("div.tools", {}, cancel)),
      info, output),
    h("section.card", {},
      h("div.head", {}, h("h2", { text: "Events" }), h("div.tools", {}, streamState)),
      events)));

  refresh().catch(showError);
  followEvents(id, {
    signal: view.controller.signal,
    onEvent: addEvent,
    onState: (text, cls) => { streamState.textContent = text; streamState.className = `live ${cls}`; },
  }).then(() => refresh()).catch(showError);
}

// ---------------------------------------------------------------- approvals

function approvalHead(a) {
  return h("div.head", {},
    h("h2", {}, h("span.tool-name", {}, a.kind === "question" ? "Question" : shown(a.tool_name)), " ", badge(a.kind)),
    h("span.muted", {}, "task ", h("a.mono", { href: `#/tasks/${enc(a.task_id)}`, text: shortId(a.task_id) }),
      " · session ", h("a.mono", { href: `#/sessions/${enc(a.session_id)}`, text: shortId(a.session_id) }),
      " · ", when(a.created_at)));
}

// The optional message of a decision, when one was typed.
function withMessage(body, message) {
  const text = message.value.trim();
  return text ? { ...body, message: text } : body;
}

function questionGroup(a, q, index) {
  const name = `q-${a.id}-${index}`;
  const options = (q.options || []).map((option) => h("label.option", {},
    h("input", { type: q.multiSelect ? "checkbox" : "radio", name, value: option.label }),
    h("span", {}, h("strong", {}, shown(option.label)),
      option.description ? h("span.muted", {}, " — ", shown(option.description)) : null)));
  const fieldset = h("fieldset.question", {},
    h("legend", {}, q.header ? h("span.badge.s-header", {}, shown(q.header)) : null, " ", shown(q.question)),
    options);
  return { q, fieldset };
}

// A question's controls: one group of options per question, Answer and Decline.
function questionControls(a, message, decide) {
  const questions = Array.isArray(a.input && a.input.questions) ? a.input.questions : [];
  const groups = questions.map((q, index) => questionGroup(a, q, index));
  const answer = action("Answer", async () => {
    const answers = {};
    for (const { q, fieldset } of groups) {
      const chosen = [...fieldset.querySelectorAll("input:checked")].map((input) => input.value);
      if (!chosen.length) { showAlert(`Choose an answer to “${visibleText(q.question)}”.`); return; }
      answers[q.question] = chosen.join(", ");
    }
    await decide({ decision: "allow", answers }, () => "Answered.");
  });
  const decline = action("Decline", () => decide(withMessage({ decision: "deny" }, message),
    () => "Declined."), ".secondary");
  return [groups.map((g) => g.fieldset), h("div.actions", {}, answer, decline),
    field("Message if you decline", message)];
}

// A tool use's controls: its input, a message, remember, Allow and Deny.
function toolControls(a, message, decide) {
  const remember = h("input", { type: "checkbox", name: "remember" });
  const allow = action("Allow", () => decide(
    withMessage({ decision: "allow", ...(remember.checked ? { remember: true } : {}) }, message),
    (d) => `Allowed ${visibleText(d.tool_name)}.`));
  const deny = action("Deny", () => decide(withMessage({ decision: "deny" }, message),
    (d) => `Denied ${visibleText(d.tool_name)}.`), ".danger");
  return [toolInput(a.input),
    field("Message", message),
    h("label.option", {}, remember, h("span", { text: "Allow such uses for the rest of the session" })),
    h("div.actions", {}, allow, deny)];
}

function approvalCard(a, onDecided) {
  const message = h("input", { name: "message", placeholder: "Message for Claude (optional)", autocomplete: "off" });

  async function decide(body, done) {
    try {
      const decided = await api("POST", `/approvals/${enc(a.id)}`, { body });
      showAlert(done(decided), "info");
      onDecided(a.id);
    } catch (err) {
      showError(err);
      if (err instanceof ApiError && (err.code === "approval_decided" || err.status === 404)) onDecided(a.id);
    }
  }

  const controls = a.kind === "question" ? questionControls(a, message, decide) : toolControls(a, message, decide);
  return h("article.card.approval", { dataset: { id: a.id, kind: a.kind } }, approvalHead(a),
    hiddenWarning(a.tool_name, a.input), controls);
}

function renderApprovals(view) {
  const list = h("div.approvals", { id: "approvals" });
  const empty = h("p.muted.empty", { text: "Nothing waits for a decision.", hidden: true });
  const cards = new Map();

  function removeCard(id) {
    const card = cards.get(id);
    if (card) card.remove();
    cards.delete(id);
    empty.hidden = cards.size > 0;
  }

  // Cards are kept across polls (a half-typed message survives): add new, drop gone.
  async function refresh() {
    const page = await api("GET", "/approvals", {
      query: { status: "pending", limit: 200, order: "asc" }, signal: view.controller.signal,
    });
    const seen = new Set();
    for (const a of page.data) {
      seen.add(a.id);
      if (!cards.has(a.id)) {
        const card = approvalCard(a, removeCard);
        cards.set(a.id, card);
        list.append(card);
      }
    }
    for (const id of [...cards.keys()]) if (!seen.has(id)) removeCard(id);
    empty.hidden = cards.size > 0;
  }

  main.append(h("section", {},
    h("div.head.card", {}, h("h1", { text: "Pending approvals" }),
      h("div.tools", {}, h("span.muted", { text: "Refreshed every 2 s." }))),
    empty, list));
  refresh().catch(showError);
  every(view, POLL_APPROVALS_MS, () => refresh().catch(() => {}));
}

// ---------------------------------------------------------------- start

// An open service needs no token: ask without one first, and go straight in if it answers.
async function enterOpenService() {
  try {
    const me = await api("GET", "/me", { token: "" });
    auth.save("");
    setWho(me);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) throw err;
  }
}

async function start() {
  if (!auth.signedIn) {
    let failed = null;
    try { await enterOpenService(); } catch (err) { failed = err; }
    render();
    if (failed) showError(failed);
    return;
  }
  let failed = null;
  try {
    setWho(await api("GET", "/me"));
  } catch (err) {
    if (!auth.signedIn) return; // a 401: api() signed out and said why
    failed = err;
  }
  render();
  if (failed) showError(failed);
}

start();
