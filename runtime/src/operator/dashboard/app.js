// The wasmbatch dashboard: reads the operator's JSON, polls it while the page is
// open, and draws its charts as SVG. Text from the operator is only ever set as text.
"use strict";

const POLL_MS = 1000;
const PAGE = 50;
const $ = (id) => document.getElementById(id);
const state = { offset: 0, dlOffset: 0, timer: null, job: null, lastTimeline: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

class Unauthorized extends Error {}

// A request to the operator; a change carries the header that marks it as the
// dashboard's. Errors come back as the operator's message.
async function call(path, method = "GET") {
  const headers = method === "GET" ? {} : { "X-Wasmbatch-UI": "1" };
  const response = await fetch(path, { method, headers, credentials: "same-origin" });
  if (response.status === 401) throw new Unauthorized();
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { message: text }; }
  if (!response.ok) throw new Error((body && body.message) || `${response.status}`);
  return body;
}

function notice(text, ok) {
  const n = $("notice");
  n.textContent = text;
  n.className = ok ? "ok" : "bad";
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.textContent = ""; }, 8000);
}

function seconds(s) {
  if (s == null || !isFinite(s)) return "–";
  if (s < 10) return `${Math.max(0, s).toFixed(s < 1 ? 2 : 1)}s`;
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}

function number(n) {
  return n == null ? "–" : Number(n).toLocaleString("en-US");
}

// What a job's status and metrics say of its progress.
function progress(status, metrics) {
  const succeeded = metrics.succeeded || 0, failed = metrics.failed || 0;
  const ended = succeeded + status.dead_lettered_batch_count;
  const total = status.total_batch_count || null;
  // The operator's own measure, to the millisecond; else the spec's times (seconds).
  const start = Date.parse(status.start_time) / 1000;
  const end = status.end_time ? Date.parse(status.end_time) / 1000 : Date.now() / 1000;
  const elapsed = Math.max(0.001, status.elapsed_secs ?? end - start);
  const rate = ended / elapsed;
  const left = total ? Math.max(0, total - ended) : null;
  const active = status.status === "running" || status.status === "pending";
  const expected = active && left != null && rate > 0 ? left / rate : null;
  return { succeeded, failed: status.dead_lettered_batch_count, total, ended, elapsed, rate, expected, active, inQueue: status.batches_in_queue };
}

function bar(p, big) {
  const node = el("div", { class: "bar" + (big ? " big" : "") + (p.total ? "" : " unknown") });
  if (p.total) {
    // Set through the CSS object model: the page's policy refuses inline styles.
    const ok = el("div", { class: "ok" }), bad = el("div", { class: "bad" });
    ok.style.width = `${(100 * p.succeeded) / p.total}%`;
    bad.style.width = `${(100 * p.failed) / p.total}%`;
    node.append(ok, bad);
  }
  node.title = `${number(p.succeeded)} succeeded, ${number(p.failed)} failed, ${number(p.inQueue)} in queue of ${p.total ? number(p.total) : "?"}`;
  node.dataset.succeeded = p.succeeded;
  node.dataset.failed = p.failed;
  node.dataset.total = p.total || "";
  return node;
}

function percent(p) {
  return p.total ? `${Math.floor((100 * p.ended) / p.total)} %` : "…";
}

// ---- the list of APIs and jobs ----

async function showList() {
  const api = $("filter-api").value, status = $("filter-status").value;
  const query = new URLSearchParams({ offset: state.offset, limit: PAGE });
  if (api) query.set("api", api);
  if (status) query.set("status", status);
  const [apis, page] = await Promise.all([call("/apis"), call(`/jobs?${query}`)]);
  drawApis(apis);
  const body = $("jobs").querySelector("tbody");
  const rows = page.jobs.map(({ job_status: s, metrics }) => {
    const p = progress(s, metrics);
    const row = el("tr", { class: "link", "data-job": s.job_id, onclick: () => { location.hash = `#/job/${s.api_name}/${s.job_id}`; } },
      el("td", { class: "mono" }, s.job_id),
      el("td", {}, s.api_name),
      el("td", {}, el("span", { class: `status ${s.status}` }, s.status)),
      el("td", {}, el("div", { class: "cell" }, bar(p), el("span", { class: "pct" }, percent(p)))),
      el("td", {}, `${p.rate.toFixed(p.rate < 10 ? 1 : 0)}/s`),
      el("td", {}, seconds(p.elapsed)),
      el("td", {}, p.active ? seconds(p.expected) : "–"));
    return row;
  });
  body.replaceChildren(...rows);
  const last = Math.min(page.offset + page.jobs.length, page.total);
  $("page").textContent = page.total ? `${number(page.offset + 1)}–${number(last)} of ${number(page.total)}` : "no jobs";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= page.total;
}

function drawApis(data) {
  const select = $("filter-api");
  const names = data.apis.map((a) => a.name);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (names.join() !== have.join()) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(chosen) ? chosen : "";
  }
  const rows = data.apis.map((a) => {
    const handler = a.handler.plugin || (a.handler.endpoints || []).join(", ") || a.handler.workers || "";
    const g = a.grants || {};
    const grants = [["http", g.http], ["read", g.read], ["write", g.write], ["inputs", g.inputs], ["submits to", g.may_submit_to]]
      .filter(([, v]) => v && v.length).map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ") || "none";
    const l = a.limits || {};
    return el("tr", { "data-api": a.name },
      el("td", {}, a.name), el("td", { class: "mono" }, handler),
      el("td", { class: "mono", title: a.version || "" }, a.version ? a.version.slice(0, 12) : "–"),
      el("td", {}, a.max_workers), el("td", {}, a.max_attempts),
      el("td", {}, l.batch_timeout_secs != null ? seconds(l.batch_timeout_secs) : "–"),
      el("td", {}, l.max_memory ? `${Math.round(l.max_memory / 1048576)} MiB` : "fitted"),
      el("td", {}, grants));
  });
  $("apis").querySelector("tbody").replaceChildren(...rows);
  $("budget").textContent = `workers in use: ${data.workers.in_use} of ${data.workers.total}; jobs running at once: at most ${data.max_running_jobs}`;
  const j = data.jobs;
  $("summary").textContent = `${number(j.running)} running, ${number(j.pending)} pending, ${number(j.succeeded + j.completed_with_failures + j.stopped + j.timed_out + j.worker_error)} ended`;
}

// ---- one job ----

async function showJob(api, id) {
  const enc = encodeURIComponent;
  const data = await call(`/batch/${enc(api)}?jobID=${enc(id)}`);
  const s = data.job_status, m = data.metrics, p = progress(s, m);
  state.job = { api, id, status: s.status };
  $("job-title").textContent = `${api} / ${id}`;
  $("job-bar").replaceWith(Object.assign(bar(p, true), { id: "job-bar" }));
  const fact = (label, value) => el("div", {}, el("span", { class: "muted" }, label), el("b", {}, value));
  $("job-facts").replaceChildren(
    fact("status", s.status), fact("progress", percent(p)),
    fact("succeeded", number(m.succeeded)), fact("dead-lettered", number(s.dead_lettered_batch_count)),
    fact("in queue", number(s.batches_in_queue)), fact("total", s.total_batch_count ? number(s.total_batch_count) : "not known yet"),
    fact("rate", `${p.rate.toFixed(1)} batches/s`), fact("elapsed", seconds(p.elapsed)),
    fact("expected", p.active ? seconds(p.expected) : "–"),
    fact("mean batch time", m.average_time_per_batch != null ? `${(m.average_time_per_batch * 1000).toFixed(2)} ms` : "–"),
    fact("on-job-complete", s.on_job_complete), fact("workers", s.workers));
  $("job-facts").dataset.status = s.status;
  $("job-error").textContent = s.error || "";
  $("job-results").href = `/batch/${enc(api)}/jobs/${enc(id)}/results`;
  $("job-results").setAttribute("download", `${id}.jsonl`);
  $("job-stop").disabled = !p.active;
  $("job-retry").disabled = s.dead_lettered_batch_count === 0;
  // The charts and dead letters change slower than the counts: every other poll.
  const now = Date.now();
  if (now - state.lastTimeline >= 2 * POLL_MS || !p.active) {
    state.lastTimeline = now;
    const [timeline, letters, apis] = await Promise.all([
      call(`/batch/${enc(api)}/jobs/${enc(id)}/timeline`),
      call(`/batch/${enc(api)}/jobs/${enc(id)}/dead-letters/summary?offset=${state.dlOffset}&limit=${PAGE}`),
      call("/apis"),
    ]);
    drawCharts(timeline);
    drawLetters(letters);
    drawApis(apis);
  }
}

function drawLetters(data) {
  $("dl-count").textContent = `(${number(data.total)})`;
  const rows = data.dead_letters.map((l) => el("tr", {},
    el("td", {}, l.index), el("td", {}, l.kind), el("td", {}, l.attempts),
    el("td", {}, l.message),
    el("td", { class: "mono head", title: `${number(l.size)} bytes` }, l.head + (l.size > l.head.length ? "…" : ""))));
  $("dead-letters").querySelector("tbody").replaceChildren(...rows);
  const last = Math.min(state.dlOffset + data.dead_letters.length, data.total);
  $("dl-page").textContent = data.total ? `${state.dlOffset + 1}–${last} of ${number(data.total)}` : "";
  $("dl-prev").disabled = state.dlOffset === 0;
  $("dl-next").disabled = last >= data.total;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// A chart of `series` (each {values, color}) over the timeline's steps; bars or lines.
function chart(target, timeline, series, kind, unit) {
  const box = $(target);
  const width = Math.max(300, box.clientWidth || 800), height = 180, left = 52, bottom = 18, top = 8;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const n = timeline.points.length;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v != null)));
  const x = (i) => left + ((width - left - 8) * i) / Math.max(1, n);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  for (const f of [0, 0.5, 1]) {
    root.append(svg("line", { x1: left, x2: width - 8, y1: y(max * f), y2: y(max * f), stroke: "#eceff1" }));
    const label = svg("text", { x: 4, y: y(max * f) + 3 });
    label.textContent = `${(max * f).toFixed(max * f < 10 ? 2 : 0)}${unit}`;
    root.append(label);
  }
  const w = Math.max(1, (width - left - 8) / Math.max(1, n) - 1);
  for (const s of series) {
    if (kind === "bars") {
      s.values.forEach((v, i) => { if (v) root.append(svg("rect", { x: x(i), y: y(v), width: w, height: Math.max(0, y(0) - y(v)), fill: s.color })); });
    } else {
      const pts = s.values.map((v, i) => (v == null ? null : [x(i) + w / 2, y(v)])).filter(Boolean);
      if (pts.length > 1) root.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.color, "stroke-width": 1.5 }));
      // Dots too, while there are few: a single step is a dot, not an invisible line.
      if (pts.length <= 60) for (const [cx, cy] of pts) root.append(svg("circle", { cx, cy, r: 3, fill: s.color }));
    }
  }
  const span = svg("text", { x: left, y: height - 4 });
  span.textContent = n ? `${seconds(n * timeline.step)} in steps of ${seconds(timeline.step)}` : "no batch has ended yet";
  root.append(span);
  box.replaceChildren(root);
  box.dataset.points = n;
}

function drawCharts(timeline) {
  const step = timeline.step || 1;
  const pts = timeline.points;
  chart("chart-rate", timeline, [
    { values: pts.map((p) => (p.succeeded + p.failed) / step), color: "#2e7d32" },
    { values: pts.map((p) => p.failed / step), color: "#c62828" },
  ], "bars", "/s");
  chart("chart-time", timeline, [
    { values: pts.map((p) => p.p50), color: "#1565c0" },
    { values: pts.map((p) => p.p90), color: "#ef6c00" },
    { values: pts.map((p) => p.p99), color: "#c62828" },
  ], "lines", "ms");
}

// ---- actions ----

function confirmDialog(text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function stopJob() {
  const { api, id } = state.job || {};
  if (!api || !(await confirmDialog(`Stop job ${id} of ${api}? Batches not handled yet are not run.`))) return;
  try {
    const answer = await call(`/batch/${encodeURIComponent(api)}?jobID=${encodeURIComponent(id)}`, "DELETE");
    notice(answer.message, true);
  } catch (e) { failed(e); }
  refresh();
}

async function retryLetters() {
  const { api, id } = state.job || {};
  try {
    const spec = await call(`/batch/${encodeURIComponent(api)}/jobs/${encodeURIComponent(id)}/dead-letters/retry`, "POST");
    notice(`dead letters re-submitted as job ${spec.job_id}`, true);
    location.hash = `#/job/${api}/${spec.job_id}`;
  } catch (e) { failed(e); }
}

async function reloadConfig() {
  try {
    const r = await call("/admin/reload", "POST");
    const parts = [["added", r.added], ["removed", r.removed], ["changed", r.changed]].filter(([, v]) => v.length).map(([k, v]) => `${k}: ${v.join(", ")}`);
    if (r.restart_needed.length) parts.push(`at the next start: ${r.restart_needed.join(", ")}`);
    notice(`configuration reloaded${parts.length ? " (" + parts.join("; ") + ")" : ", nothing changed"}`, true);
  } catch (e) { failed(e); }
  refresh();
}

function failed(e) {
  if (e instanceof Unauthorized) return showLogin();
  notice(e.message, false);
}

function showLogin() {
  for (const id of ["list", "job"]) $(id).hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  const response = await fetch("/ui/login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Wasmbatch-UI": "1" },
    body: JSON.stringify({ token: $("token").value }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { $("login-error").textContent = body.message || `${response.status}`; return; }
  $("token").value = "";
  $("login-error").textContent = "";
  $("login").hidden = true;
  $("logout").hidden = false;
  refresh();
}

// ---- the loop ----

async function refresh() {
  clearTimeout(state.timer);
  const route = location.hash.match(/^#\/job\/([^/]+)\/(.+)$/);
  try {
    $("login").hidden = true;
    if (route) {
      $("list").hidden = true; $("job").hidden = false;
      await showJob(decodeURIComponent(route[1]), decodeURIComponent(route[2]));
    } else {
      $("job").hidden = true; $("list").hidden = false; state.job = null;
      await showList();
    }
    state.timer = setTimeout(refresh, document.hidden ? 5 * POLL_MS : POLL_MS);
  } catch (e) {
    failed(e);
    if (!(e instanceof Unauthorized)) state.timer = setTimeout(refresh, 3 * POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", async () => { await fetch("/ui/logout", { method: "POST" }); showLogin(); });
  $("reload").addEventListener("click", reloadConfig);
  $("job-stop").addEventListener("click", stopJob);
  $("job-retry").addEventListener("click", retryLetters);
  $("filter-api").addEventListener("change", () => { state.offset = 0; refresh(); });
  $("filter-status").addEventListener("change", () => { state.offset = 0; refresh(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; refresh(); });
  $("dl-prev").addEventListener("click", () => { state.dlOffset = Math.max(0, state.dlOffset - PAGE); state.lastTimeline = 0; refresh(); });
  $("dl-next").addEventListener("click", () => { state.dlOffset += PAGE; state.lastTimeline = 0; refresh(); });
  window.addEventListener("hashchange", () => { state.dlOffset = 0; state.lastTimeline = 0; refresh(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh();
});
