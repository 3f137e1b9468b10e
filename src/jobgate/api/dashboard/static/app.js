// The jobgate dashboard: a small single-page app over the native API (/api/v1).
// No framework and no build step; the session is an httpOnly cookie the page never sees,
// and requests that change anything carry the session's CSRF token.
"use strict";

const STATES = [
  "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING", "COMPLETE",
  "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED", "UNKNOWN",
];
const FINAL = new Set(["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"]);
const RESCHEDULABLE = new Set(["EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"]);
const PAGE_SIZE = 50;
const FIELDS = ["id", "state", "name", "owner", "backend", "priority", "created_at",
  "updated_at", "detail", "labels"];
const SORTABLE = {
  name: "Name", state: "State", owner: "Owner", backend: "Backend", priority: "Priority",
  created_at: "Created", updated_at: "Updated",
};

const app = {
  session: null, // {authenticated, caller, csrf, login}
  view: null, // the current view's cleanup function
};

// -- small helpers ----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function badge(state) {
  return el("span", { class: `badge s-${state}`, dataset: { state } }, state);
}

function when(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString(undefined, { hour12: false });
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

// At most one call per ``ms``, the last request always served: under a steady stream of
// events a debounce would never fire.
function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  const call = () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
  call.cancel = () => { clearTimeout(timer); timer = null; };
  return call;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const init = { method: options.method || "GET", headers, credentials: "same-origin" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  if (init.method !== "GET" && app.session && app.session.csrf) {
    headers["X-CSRF-Token"] = app.session.csrf;
  }
  if (options.signal) init.signal = options.signal;
  const response = await fetch(path, init);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    if (response.status === 401 && !options.login) showLogin("Your session has ended.");
    throw new ApiError(response.status, body);
  }
  return body;
}

function may(scope) {
  const c = app.session && app.session.caller;
  return !!c && c.scopes.includes(scope);
}

// A live event source that says on the header whether it is connected.
function liveSource(url, onEvent) {
  const source = new EventSource(url);
  const dot = document.getElementById("live");
  dot.hidden = false;
  source.addEventListener("open", () => dot.classList.remove("off"));
  source.addEventListener("error", () => dot.classList.add("off"));
  source.addEventListener("state", (m) => onEvent(JSON.parse(m.data), source));
  return source;
}

// -- session ------------------------------------------------------------------------------

async function loadSession() {
  app.session = await api("/ui/session", { login: true });
  const who = document.getElementById("who");
  const logout = document.getElementById("logout");
  const nav = document.getElementById("nav");
  if (app.session.authenticated) {
    const c = app.session.caller;
    who.textContent = c.name || "anonymous";
    who.title = `${c.method}; scopes: ${c.scopes.join(", ")}`;
    logout.hidden = !app.session.csrf;
    nav.hidden = false;
  } else {
    who.textContent = "";
    logout.hidden = true;
    nav.hidden = true;
  }
}

function showLogin(message) {
  leaveView();
  app.session = { authenticated: false, caller: null, csrf: null, login: app.session?.login };
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("live").hidden = true;
  const main = document.getElementById("main");
  const error = el("p", { class: "error", id: "login-error" }, message || "");
  const submit = async (event, body) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await api("/ui/login", { method: "POST", body, login: true });
      await loadSession();
      route();
    } catch (e) {
      error.textContent = e.message;
    }
  };
  const modes = (app.session.login) || { token: true, basic: false };
  const forms = [];
  if (modes.oidc) {
    forms.push(el("div", { class: "oidc" }, el("h2", {}, "People"),
      el("a", { class: "button primary", id: "oidc-login", href: "/ui/oidc/login" },
        "Sign in with your organisation (OIDC)")));
  }
  if (modes.token) {
    const token = el("input", { type: "password", id: "login-token", autocomplete: "off",
      placeholder: "jg_…", required: true });
    forms.push(el("form", { id: "token-form",
      onsubmit: (e) => submit(e, { token: token.value }) },
    el("h2", {}, "Service token"),
    el("label", {}, "Paste a token (operators: `jobgate token create`, or the admin-token file)"),
    token,
    el("button", { class: "primary", type: "submit" }, "Log in")));
  }
  if (modes.basic) {
    const user = el("input", { id: "login-user", autocomplete: "username", required: true });
    const password = el("input", { id: "login-password", type: "password",
      autocomplete: "current-password", required: true });
    forms.push(el("form", { id: "basic-form",
      onsubmit: (e) => submit(e, { user: user.value, password: password.value }) },
    el("h2", {}, "User and password"), el("label", {}, "User"), user,
    el("label", {}, "Password"), password,
    el("button", { class: "primary", type: "submit" }, "Log in")));
  }
  main.replaceChildren(el("div", { class: "card login" }, el("h1", {}, "Log in to jobgate"),
    ...forms, error));
}

async function logout() {
  try { await api("/ui/logout", { method: "POST", login: true }); } catch { /* gone anyway */ }
  app.session = { ...app.session, authenticated: false, caller: null, csrf: null };
  location.hash = "#/";
  showLogin("Logged out.");
}

// -- routing ------------------------------------------------------------------------------

function leaveView() {
  if (app.view) app.view();
  app.view = null;
}

function route() {
  if (!app.session || !app.session.authenticated) {
    showLogin();
    return;
  }
  leaveView();
  const hash = location.hash || "#/";
  const main = document.getElementById("main");
  main.replaceChildren();
  document.getElementById("live").hidden = true;
  let name = "jobs";
  const job = hash.match(/^#\/jobs\/([^/?]+)/);
  if (job) {
    name = "job";
    app.view = jobView(main, decodeURIComponent(job[1]));
  } else if (hash.startsWith("#/overview")) {
    name = "overview";
    app.view = overviewView(main);
  } else {
    app.view = jobsView(main, new URLSearchParams(hash.split("?")[1] || ""));
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === name);
  }
}

// -- the job table ----------------------------------------------------------------------------

function jobsView(main, params) {
  const q = {
    state: params.get("state") || "",
    owner: params.get("owner") || "",
    backend: params.get("backend") || "",
    label: params.get("label") || "",
    name: params.get("name") || "",
    sort: params.get("sort") || "created_at",
    dir: params.get("dir") || "desc",
  };
  let cursors = [null]; // cursor of each page seen so far; the last is the current page
  let nextCursor = null;
  let rows = new Map(); // job id -> <tr>
  let closed = false;

  const field = (key, label, input) => el("label", {}, label, input);
  const stateSel = el("select", { id: "f-state" }, el("option", { value: "" }, "any"),
    STATES.map((s) => el("option", { value: s, selected: q.state === s }, s)));
  const backendSel = el("select", { id: "f-backend" }, el("option", { value: "" }, "any"));
  const owner = el("input", { id: "f-owner", value: q.owner, placeholder: "owner", size: 14 });
  const label = el("input", { id: "f-label", value: q.label, placeholder: "key=value", size: 14 });
  const name = el("input", { id: "f-name", value: q.name, placeholder: "name (* ? wildcards)",
    size: 18 });
  const counts = el("div", { class: "counts", id: "counts" });
  const total = el("span", { class: "muted", id: "total" });
  const head = el("tr", {});
  const body = el("tbody", { id: "jobs-body" });
  const table = el("table", { id: "jobs" }, el("thead", {}, head), body);
  const older = el("button", { id: "older", onclick: () => page(+1) }, "Older →");
  const newer = el("button", { id: "newer", onclick: () => page(-1) }, "← Newer");
  const pageNo = el("span", { class: "muted", id: "page-no" });

  main.append(
    el("div", { class: "card" },
      el("form", { class: "filters", id: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
        field("state", "State", stateSel), field("owner", "Owner", owner),
        field("backend", "Backend", backendSel), field("label", "Label", label),
        field("name", "Name", name),
        el("button", { type: "submit", class: "primary" }, "Filter"),
        el("button", { type: "button", onclick: () => { location.hash = "#/"; } }, "Clear")),
      counts),
    el("div", { class: "card" }, table, el("div", { class: "pager" }, newer, older, pageNo, total)),
  );

  for (const [key, text] of [["id", "ID"], ...Object.entries(SORTABLE)]) {
    if (key === "id") { head.append(el("th", {}, text)); continue; }
    const th = el("th", { class: "sortable", dataset: { sort: key },
      onclick: () => {
        q.dir = q.sort === key && q.dir === "desc" ? "asc" : "desc";
        q.sort = key;
        setHash();
      } }, text);
    if (q.sort === key) th.classList.add("sorted", q.dir);
    head.append(th);
  }
  head.append(el("th", {}, "Detail"));

  stateSel.addEventListener("change", apply);
  backendSel.addEventListener("change", apply);

  function setHash() {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v) p.set(k, v);
    if (q.sort === "created_at") p.delete("sort");
    if (q.dir === "desc") p.delete("dir");
    location.hash = `#/?${p}`;
  }

  function apply() {
    q.state = stateSel.value;
    q.owner = owner.value.trim();
    q.backend = backendSel.value;
    q.label = label.value.trim();
    q.name = name.value.trim();
    setHash();
  }

  function filters() {
    const out = [];
    if (q.state) out.push({ field: "state", op: "eq", value: q.state });
    if (q.owner) out.push({ field: "owner", op: "eq", value: q.owner });
    if (q.backend) out.push({ field: "backend", op: "eq", value: q.backend });
    if (q.label) {
      const [k, ...v] = q.label.split("=");
      if (v.length) out.push({ field: `labels.${k.trim()}`, op: "eq", value: v.join("=").trim() });
      else out.push({ field: `labels.${k.trim()}`, op: "neq", value: null });
    }
    if (q.name) {
      const pattern = /[*?]/.test(q.name) ? q.name : `${q.name}*`;
      out.push({ field: "name", op: "like", value: pattern });
    }
    return out;
  }

  function row(job) {
    const tr = el("tr", { dataset: { id: job.id } },
      el("td", { class: "mono" }, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}` },
        job.id.slice(0, 8))),
      el("td", {}, job.name || ""),
      el("td", { class: "state" }, badge(job.state)),
      el("td", {}, job.owner || ""),
      el("td", {}, job.backend),
      el("td", { class: "num" }, job.priority),
      el("td", {}, when(job.created_at)),
      el("td", { class: "updated" }, when(job.updated_at)),
      el("td", { class: "detail muted" }, job.detail || ""));
    return tr;
  }

  async function load() {
    const cursor = cursors[cursors.length - 1];
    const req = { filters: filters(), sort: [{ field: q.sort, direction: q.dir }],
      fields: FIELDS, limit: PAGE_SIZE };
    if (cursor) req.cursor = cursor;
    let result;
    try {
      result = await api("/api/v1/jobs/search", { method: "POST", body: req });
    } catch (e) {
      if (!closed) body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "error" }, e.message)));
      return;
    }
    if (closed) return;
    nextCursor = result.next_cursor;
    rows = new Map();
    const trs = result.jobs.map((job) => {
      const tr = row(job);
      rows.set(job.id, tr);
      return tr;
    });
    if (!trs.length) trs.push(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No jobs.")));
    body.replaceChildren(...trs);
    older.disabled = !nextCursor;
    newer.disabled = cursors.length < 2;
    pageNo.textContent = `page ${cursors.length}`;
    if (!document.body.dataset.tableReady) {
      performance.mark("jobgate-table-rendered");
      document.body.dataset.tableReady = "1";
    }
    table.dataset.loaded = String(performance.now());
  }

  let by = {}; // state -> count, as last read (and kept up to date from events)
  const unfiltered = () => filters().every((f) => f.field === "state");

  function renderCounts() {
    const sum = Object.values(by).reduce((a, n) => a + n, 0);
    counts.replaceChildren(...STATES.filter((s) => by[s] > 0).map((s) =>
      el("span", { class: `chip${q.state === s ? " on" : ""}`, dataset: { state: s },
        onclick: () => { stateSel.value = q.state === s ? "" : s; apply(); } },
      el("span", { class: `dot s-${s}` }), s, el("b", {}, by[s].toLocaleString()))));
    total.textContent = `${sum.toLocaleString()} jobs`;
  }

  let events = 0; // events applied to `by`, so that a read they overtook is read again

  async function loadCounts() {
    const f = filters().filter((x) => x.field !== "state");
    const before = events;
    let groups;
    try {
      groups = (await api("/api/v1/jobs/summary", { method: "POST",
        body: { group_by: ["state"], filters: f } })).groups;
    } catch { return; }
    if (closed) return;
    by = Object.fromEntries(groups.map((g) => [g.state, g.count]));
    renderCounts();
    // An event applied while this read was out may be missing from its answer (which
    // replaced it): read once more.
    if (events !== before) recount();
    if (!document.body.dataset.countsReady) {
      performance.mark("jobgate-counts-rendered");
      document.body.dataset.countsReady = "1";
    }
  }

  function page(step) {
    if (step > 0 && nextCursor) cursors.push(nextCursor);
    else if (step < 0 && cursors.length > 1) cursors.pop();
    else return;
    load();
  }

  // Live: a change to a shown job updates its row at once; the page and the counts are
  // then re-read (throttled) so that order, filters and new jobs stay right.
  const reload = throttle(() => { if (cursors.length === 1 || rows.size) load(); }, 500);
  // Counts over many jobs cost a scan: without filters each event moves one job from its
  // old state to its new one here, and the exact counts are read again now and then.
  const recount = throttle(loadCounts, 3000);
  const recountLater = throttle(loadCounts, 30000);
  const source = liveSource("/api/v1/events/stream", (event) => {
    const tr = rows.get(event.job_id);
    if (tr) {
      tr.querySelector("td.state").replaceChildren(badge(event.state));
      tr.querySelector("td.detail").textContent = event.detail || "";
      tr.querySelector("td.updated").textContent = when(event.at);
      tr.classList.remove("flash");
      void tr.offsetWidth; // restart the animation
      tr.classList.add("flash");
    }
    if (tr || cursors.length === 1) reload();
    if (unfiltered()) {
      events += 1;
      if (event.from_state) by[event.from_state] = (by[event.from_state] || 0) - 1;
      by[event.state] = (by[event.state] || 0) + 1;
      renderCounts();
      recountLater();
    } else {
      recount();
    }
  });

  api("/api/v1/backends").then((info) => {
    if (closed) return;
    for (const b of info.backends) {
      backendSel.append(el("option", { value: b.name, selected: q.backend === b.name }, b.name));
    }
  }).catch(() => {});
  load();
  loadCounts();
  return () => {
    closed = true;
    source.close();
    reload.cancel();
    recount.cancel();
    recountLater.cancel();
  };
}

// -- one job ---------------------------------------------------------------------------------

function jobView(main, id) {
  let closed = false;
  let job = null;
  const seen = new Set();
  const logAbort = { controller: null };
  const title = el("h1", {}, id);
  const state = el("span", { id: "job-state" });
  const detail = el("p", { class: "muted", id: "job-detail" });
  const actions = el("div", { class: "actions", id: "job-actions" });
  const facts = el("dl", { class: "kv", id: "job-facts" });
  const history = el("tbody", { id: "history" });
  const logPre = el("pre", { id: "log" }, "");
  const logTabs = el("div", { class: "tabs", id: "log-tabs" });
  const outputs = el("div", { id: "outputs" });
  const metadata = el("div", { id: "metadata" });
  const spec = el("pre", { id: "spec" });
  let logChoice = { executor: 0, stream: "stdout" };

  main.append(
    el("p", {}, el("a", { href: "#/" }, "← all jobs")),
    el("div", { class: "card" }, title, el("p", {}, state), detail, actions, facts),
    el("div", { class: "grid" },
      el("div", { class: "card" }, el("h2", {}, "Status history"),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", {}, "From"),
          el("th", {}, "State"), el("th", {}, "Source"), el("th", {}, "Detail"))), history)),
      el("div", { class: "card" }, el("h2", {}, "Executor logs"), logTabs, logPre)),
    el("div", { class: "grid" },
      el("div", { class: "card" }, el("h2", {}, "Outputs"), outputs),
      el("div", { class: "card" }, el("h2", {}, "Backend"), metadata)),
    el("div", { class: "card" }, el("h2", {}, "Spec"), spec),
  );

  function addEvent(e) {
    if (seen.has(e.seq)) return;
    seen.add(e.seq);
    history.append(el("tr", { dataset: { seq: e.seq } }, el("td", {}, when(e.at)),
      el("td", {}, e.from_state ? badge(e.from_state) : ""), el("td", {}, badge(e.state)),
      el("td", {}, e.source), el("td", { class: "muted" }, e.detail || "")));
  }

  function renderJob() {
    title.textContent = job.name || job.id;
    state.replaceChildren(badge(job.state));
    detail.textContent = job.detail || "";
    facts.replaceChildren(...[
      ["id", job.id], ["owner", job.owner || "—"], ["backend", job.backend],
      ["priority", job.priority], ["attempt", job.attempt], ["reschedules", job.reschedules],
      ["created", when(job.created_at)], ["updated", when(job.updated_at)],
      ["labels", Object.entries(job.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—"],
    ].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
    actions.replaceChildren();
    if (may("submit")) {
      if (!FINAL.has(job.state) && job.state !== "CANCELING") {
        actions.append(el("button", { class: "danger", id: "cancel",
          onclick: () => control("cancel") }, "Cancel"));
      }
      if (RESCHEDULABLE.has(job.state)) {
        actions.append(el("button", { class: "primary", id: "reschedule",
          onclick: () => control("reschedule") }, "Reschedule"));
      }
      if (job.state === "PAUSED") {
        actions.append(el("button", { class: "primary", id: "start",
          onclick: () => control("start") }, "Start"));
      }
    }
    spec.textContent = JSON.stringify(job.spec, null, 2);
    const runs = job.logs || [];
    const outs = runs.flatMap((r) => r.outputs || []);
    outputs.replaceChildren(outs.length
      ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "URL"), el("th", {}, "Path"),
        el("th", {}, "Bytes"))), el("tbody", {}, outs.map((o) => el("tr", {},
        el("td", { class: "mono" }, o.url), el("td", { class: "mono" }, o.path),
        el("td", { class: "num" }, o.size_bytes)))))
      : el("p", { class: "muted" }, FINAL.has(job.state) ? "No outputs." : "Not yet."));
    metadata.replaceChildren(...(runs.length ? runs.map((r, i) => el("div", {},
      el("h2", {}, `Attempt ${i + 1}`),
      el("dl", { class: "kv" }, [
        ["start", when(r.start_time)], ["end", when(r.end_time)],
        ...Object.entries(r.metadata || {}),
        ["exit codes", (r.logs || []).map((l) => l.exit_code).join(", ")],
      ].flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, String(v ?? ""))])),
      (r.system_logs || []).length ? el("pre", {}, r.system_logs.join("\n")) : null))
      : [el("p", { class: "muted" }, `backend ${job.backend}: not started yet`)]));
    const executors = (job.spec.executors || []).length || 1;
    logTabs.replaceChildren(
      ...Array.from({ length: executors }, (_, i) => el("button", {
        class: logChoice.executor === i ? "on" : "",
        onclick: () => { logChoice.executor = i; followLog(); renderJob(); } }, `executor ${i}`)),
      el("span", { class: "spacer" }),
      ...["stdout", "stderr"].map((s) => el("button", { class: logChoice.stream === s ? "on" : "",
        dataset: { stream: s },
        onclick: () => { logChoice.stream = s; followLog(); renderJob(); } }, s)));
  }

  async function control(action) {
    for (const b of actions.querySelectorAll("button")) b.disabled = true;
    try {
      const r = await api(`/api/v1/jobs/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      toast(`${action}: ${r.state}`);
      if (action !== "cancel") { followEvents(); followLog(); }
    } catch (e) {
      toast(`${action} failed: ${e.message}`);
    }
    await refresh();
  }

  async function refresh() {
    try {
      job = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
    } catch (e) {
      if (!closed) main.replaceChildren(el("div", { class: "card" },
        el("h1", {}, e.status === 404 ? "No such job" : "Error"), el("p", {}, e.message),
        el("a", { href: "#/" }, "← all jobs")));
      closed = true;
      return false;
    }
    if (!closed) renderJob();
    return true;
  }

  // The log follows while the job runs: one streamed response, appended as it comes.
  async function followLog() {
    if (logAbort.controller) logAbort.controller.abort();
    const controller = new AbortController();
    logAbort.controller = controller;
    logPre.textContent = "";
    const { executor, stream } = logChoice;
    const url = `/api/v1/jobs/${encodeURIComponent(id)}/logs?stream=${stream}` +
      `&executor=${executor}&follow=true`;
    try {
      const response = await fetch(url, { credentials: "same-origin", signal: controller.signal });
      if (!response.ok) {
        logPre.textContent = `(no log: HTTP ${response.status})`;
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atEnd = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 4;
        logPre.append(value);
        if (atEnd) logPre.scrollTop = logPre.scrollHeight;
      }
      logPre.dataset.done = "1";
    } catch (e) {
      if (e.name !== "AbortError") logPre.append(`\n(log interrupted: ${e.message})`);
    }
  }

  let source = null;
  function followEvents() {
    if (source) source.close();
    const after = seen.size ? `?after=${Math.max(...seen)}` : "";
    source = liveSource(`/api/v1/jobs/${encodeURIComponent(id)}/events/stream${after}`,
      (event, src) => {
        addEvent(event);
        if (job) {
          job.state = event.state;
          job.detail = event.detail;
          renderJob();
        }
        refreshSoon();
        // The server ends the stream after the final state; do not let the browser reconnect.
        if (FINAL.has(event.state)) src.close();
      });
  }
  const refreshSoon = throttle(() => { if (!closed) refresh(); }, 300);

  (async () => {
    if (!(await refresh())) return;
    followEvents();
    followLog();
  })();
  return () => {
    closed = true;
    if (source) source.close();
    if (logAbort.controller) logAbort.controller.abort();
    refreshSoon.cancel();
  };
}

// -- overview: plots drawn as SVG ---------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) if (c) node.append(c);
  return node;
}

function color(state) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${state}`).trim() || "#888";
}

function niceMax(v) {
  if (v <= 4) return 4;
  if (v <= 8) return 8;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((x) => x >= v);
}

// A chart frame: y axis with a few ticks, x labels, and a plotting function.
function frame(id, maxY, xLabels, bars = false) {
  const W = 600, H = 220, L = 44, R = 8, T = 8, B = 26;
  const root = svg("svg", { class: "chart", id, viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none", role: "img" });
  const top = niceMax(maxY);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const t = svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
    t.textContent = Number.isInteger(v) ? v : v.toFixed(1);
    root.append(t);
  }
  const n = xLabels.length;
  const x = bars
    ? (i) => L + ((W - L - R) * (i + 0.5)) / n
    : (i) => L + ((W - L - R) * i) / Math.max(n - 1, 1);
  const every = Math.ceil(n / (bars ? 12 : 8));
  xLabels.forEach((label, i) => {
    if (i % every) return;
    const t = svg("text", { x: x(i), y: H - 8, "text-anchor": "middle" });
    t.textContent = label;
    root.append(t);
  });
  return { root, x, y, W, H, L, R, T, B, n };
}

function legend(items) {
  return el("div", { class: "legend" }, items.map(([name, c]) =>
    el("span", {}, svg("svg", { width: 10, height: 10, viewBox: "0 0 10 10" },
      svg("circle", { cx: 5, cy: 5, r: 5, fill: c })), " ", name)));
}

function linesChart(id, labels, series) {
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const f = frame(id, max, labels);
  for (const s of series) {
    const d = s.values.map((v, i) => `${i ? "L" : "M"}${f.x(i).toFixed(1)},${f.y(v).toFixed(1)}`)
      .join("");
    f.root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2,
      "vector-effect": "non-scaling-stroke", "data-series": s.name }));
  }
  return el("div", {}, f.root, legend(series.map((s) => [s.name, s.color])));
}

function barsChart(id, labels, series) {
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const f = frame(id, max, labels, true);
  const slot = (f.W - f.L - f.R) / labels.length;
  const width = Math.max(1, (slot * 0.8) / series.length);
  series.forEach((s, k) => {
    s.values.forEach((v, i) => {
      if (!v) return;
      const x0 = f.L + slot * i + slot * 0.1 + width * k;
      f.root.append(svg("rect", { x: x0.toFixed(1), y: f.y(v).toFixed(1), width: width.toFixed(1),
        height: (f.y(0) - f.y(v)).toFixed(1), fill: s.color, "data-series": s.name },
      svg("title", {}, document.createTextNode(`${labels[i]}: ${v}`))));
    });
  });
  return el("div", {}, f.root, legend(series.map((s) => [s.name, s.color])));
}

function overviewView(main) {
  let closed = false;
  const body = el("div", { id: "overview" }, el("p", { class: "muted" }, "Loading…"));
  const range = el("select", { id: "window" }, [30, 60, 180, 720].map((m) =>
    el("option", { value: m, selected: m === 60 }, `last ${m < 120 ? `${m} min` : `${m / 60} h`}`)));
  range.addEventListener("change", () => load());
  main.append(el("div", { class: "card" }, el("h1", {}, "Overview"), range), body);

  async function load() {
    let o;
    try {
      o = await api(`/ui/overview?minutes=${range.value}`);
    } catch (e) {
      body.replaceChildren(el("p", { class: "error" }, e.message));
      return;
    }
    if (closed) return;
    const labels = o.minutes.map((m) => new Date(m).toLocaleTimeString(undefined,
      { hour: "2-digit", minute: "2-digit", hour12: false }));
    const present = STATES.filter((s) => o.states.some((p) => p[s]));
    const bins = (h) => h.map((b) => (b.le === null ? ">1h" : `≤${seconds(b.le)}`));
    const health = o.backends.map((b) => {
      const down = b.waiting > 0;
      return el("tr", { dataset: { backend: b.name } }, el("td", {}, b.name),
        el("td", { class: down ? "down" : "up" }, down ? "unreachable or busy" : "up"),
        el("td", { class: "num" }, b.queued), el("td", { class: "num" }, b.running),
        el("td", { class: "muted" }, b.last_error
          ? `${when(b.last_error.at)}: ${b.last_error.detail || ""}` : "—"));
    });
    body.replaceChildren(...[
      el("div", { class: "grid" },
        el("div", { class: "card" }, el("h2", {}, "Jobs per state"),
          linesChart("chart-states", labels, present.map((s) => ({ name: s, color: color(s),
            values: o.states.map((p) => p[s] || 0) })))),
        el("div", { class: "card" }, el("h2", {}, "Submissions and completions per minute"),
          barsChart("chart-rate", labels, [
            { name: "submitted", color: color("RUNNING"), values: o.submitted },
            { name: "completed", color: color("COMPLETE"), values: o.completed }]))),
      el("div", { class: "grid" },
        el("div", { class: "card" }, el("h2", {}, "Queue wait (submission → running)"),
          barsChart("chart-wait", bins(o.queue_wait), [{ name: "jobs", color: color("QUEUED"),
            values: o.queue_wait.map((b) => b.count) }])),
        el("div", { class: "card" }, el("h2", {}, "Run time (running → final)"),
          barsChart("chart-run", bins(o.run_time), [{ name: "jobs", color: color("COMPLETE"),
            values: o.run_time.map((b) => b.count) }]))),
      el("div", { class: "card" }, el("h2", {}, "Backends"),
        el("table", { id: "backends" }, el("thead", {}, el("tr", {}, el("th", {}, "Backend"),
          el("th", {}, "Health"), el("th", {}, "Queued"), el("th", {}, "Running"),
          el("th", {}, "Last error"))), el("tbody", {}, health))),
      o.window.truncated ? el("p", { class: "muted" }, "Only the newest events are counted.") : null,
    ].filter(Boolean));
  }
  load();
  const timer = setInterval(load, 10000);
  return () => { closed = true; clearInterval(timer); };
}

// -- start --------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("logout").addEventListener("click", logout);
  try {
    await loadSession();
  } catch (e) {
    document.getElementById("main").replaceChildren(el("p", { class: "error" }, e.message));
    return;
  }
  route();
});
