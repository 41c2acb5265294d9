// huxue duty console: plain JavaScript, no build step. Reads /api, follows /api/stream (SSE).
"use strict";

const RANK = { Extreme: 0, Severe: 1, Moderate: 2, Minor: 3 };
const STAGE_LABEL = { ack: "on-site response due", arrive_target: "mobile unit due (3 min)", arrive: "mobile unit due (5 min)" };
const state = { me: null, incidents: new Map(), schools: new Map(), school: null, events: null,
  units: { units: [], schools: new Map(), loadedAt: 0 }, coverageMode: false };
const $ = (sel) => document.querySelector(sel);

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 3000);
}

async function api(path, options = {}) {
  const res = await fetch(path, { credentials: "same-origin", headers: { "Content-Type": "application/json" }, ...options });
  if (res.status === 401) { showLogin(); throw new Error("signed out"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || res.statusText);
  return body;
}

function showLogin() {
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  state.me = null;  // signed out: no liveness watch until signed in again
  if (alarm.on) stopAlarm();
  if (state.events) { state.events.close(); state.events = null; }
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const res = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: form.get("username"), password: form.get("password") }) });
  if (!res.ok) { $("#login-error").textContent = "Unknown user or wrong password."; return; }
  $("#login-error").textContent = "";
  start();
});

$("#logout").addEventListener("click", async () => { await fetch("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }); showLogin(); });

function filters() {
  return { school: $("#f-school").value, severity: $("#f-severity").value, rule: $("#f-rule").value, status: $("#f-status").value };
}

function visible(inc) {
  const f = filters();
  return (!f.school || inc.school_id === f.school) && (!f.severity || inc.severity === f.severity)
    && (!f.rule || inc.rule === f.rule) && (!f.status || inc.status === f.status);
}

// Most urgent first (console.py `urgency`, the same key): unacknowledged real panics by their
// next deadline, then other real incidents by severity and deadline, then drills the same way.
function urgency(inc) {
  const unackedPanic = unacknowledgedPanic(inc);
  const d = inc.next_deadline;
  return [inc.status === "Exercise" ? 1 : 0, unackedPanic ? 0 : 1, unackedPanic ? 0 : (RANK[inc.severity] ?? 9),
    d ? Date.parse(d.at) : Infinity, Date.parse(inc.opened_at)];
}

function unacknowledgedPanic(inc) {
  return inc.rule === "panic" && inc.state === "open" && !inc.acked_at && !inc.arrived_at;
}

function ordered(list) {
  const keyed = list.map((inc) => [urgency(inc), inc]);
  keyed.sort(([a], [b]) => { for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1; return 0; });
  return keyed.map(([, inc]) => inc);
}

const STAGE_WORDS = {
  opened: "opened", corroborated: "corroborated by a sensor", onsite_overdue: "on-site response overdue",
  mobile_late: "mobile unit late (3 min)", mobile_overdue: "mobile unit overdue (5 min)", acknowledged: "acknowledged",
  arrived: "unit on scene", resolved: "resolved", false_alarm: "false alarm", expired: "expired (quiet)",
  superseded: "taken over by a corroborated incident", recovered: "recovered, works again", restored: "post staffed again",
  window_ended: "window ended", lifted: "lockdown lifted", ended: "flood ended",
};

const RULE_STAGE_WORDS = { coverage_gap: { opened: "no unit within reach", restored: "a unit can make it again", window_ended: "window ended" } };

function stageWords(stage, rule) {
  if (RULE_STAGE_WORDS[rule]?.[stage]) return RULE_STAGE_WORDS[rule][stage];
  const joined = /^joined-(\d+)$/.exec(stage || "");
  if (joined) return `more evidence (#${joined[1]})`;
  const sent = /^dispatched-(\d+)$/.exec(stage || "");
  if (sent) return `unit dispatched (#${sent[1]})`;
  const units = /^units-(\d+)$/.exec(stage || "");
  if (units) return "nearest units changed";
  return STAGE_WORDS[stage] || stage;
}

// A card's times are on the school's clock (its registry timezone, `inc.timezone`), not this
// browser's: a duty room may watch schools in other zones. The date shows when not today there.
function schoolTime(iso, tz) {
  const at = new Date(iso);
  const day = (d) => new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(d);
  const time = new Intl.DateTimeFormat([], { timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }).format(at);
  return day(at) === day(new Date()) ? time : `${day(at)} ${time}`;
}

function zoneLabel(tz) {  // e.g. "GMT+8 (Asia/Shanghai)": the short name the browser knows, and the zone
  const short = new Intl.DateTimeFormat([], { timeZone: tz, timeZoneName: "short" }).formatToParts(new Date()).find((p) => p.type === "timeZoneName");
  return `${short ? short.value : ""} (${tz})`.trim();
}

function countdown(inc) {
  const d = inc.next_deadline;
  if (!d) return "";
  return `<div><span class="countdown" data-at="${esc(d.at)}"></span> <span class="meta">${esc(STAGE_LABEL[d.name] || d.name)}</span></div>`;
}

// Device-supplied media URLs become links or images only when they are http(s):
// anything else (javascript:, data:, file:) is shown as text.
function webUrl(u) {
  return typeof u === "string" && /^https?:\/\//i.test(u) ? u : "";
}

// A snapshot that does not load (NVR down, expired link) becomes a text placeholder, not a
// broken-image icon; remembered, so re-renders do not try it again. Clips are links only.
const brokenMedia = new Set();

document.addEventListener("error", (e) => {
  const img = e.target;
  if (!(img instanceof HTMLImageElement) || !img.closest(".evidence")) return;
  brokenMedia.add(img.getAttribute("src"));
  const gone = document.createElement("span");
  gone.className = "media-missing";
  gone.textContent = "snapshot unavailable";
  (img.closest("a") || img).replaceWith(gone);
}, true);  // capture: error events do not bubble

function evidence(inc) {
  return (inc.evidence || []).slice(-6).map((e) => {
    const m = e.media || {};
    const thumb = webUrl(m.thumbnail_url) || webUrl(m.snapshot_url);
    const img = !thumb ? "" : brokenMedia.has(thumb) ? '<span class="media-missing">snapshot unavailable</span>'
      : `<a href="${esc(webUrl(m.snapshot_url) || thumb)}" target="_blank" rel="noopener noreferrer"><img src="${esc(thumb)}" alt="snapshot" loading="lazy"></a>`;
    const clip = webUrl(m.clip_url) ? ` <a href="${esc(m.clip_url)}" target="_blank" rel="noopener noreferrer">clip</a>` : (m.clip_url ? ` <span class="meta">clip: ${esc(m.clip_url)}</span>` : "");
    const other = !thumb && (m.thumbnail_url || m.snapshot_url) ? ` <span class="meta">media: ${esc(m.thumbnail_url || m.snapshot_url)}</span>` : "";
    return `<div>${img}${esc(e.type)} · ${esc(e.device_id)}${clip}${other}</div>`;
  }).join("");
}

// The buttons are the server's `inc.actions` (console.py ACTIONS, the one table of what applies
// to which incident). Arrived first asks, inline, for the unit on scene: it is required.
const ACTION_LABELS = { ack: "Acknowledge", resolve: "Resolve", false_alarm: "False alarm", lift_lockdown: "Lift lockdown" };
const arriving = new Map();  // incident id -> {unit, error} while its prompt is open (outlives re-renders)

const drafts = new Map();  // incident id -> the note being typed (outlives live re-renders)

function permitted(a) {  // a school-wide command (lift_lockdown) only for who may send it
  return a !== "lift_lockdown" || (state.me?.school_commands || []).includes(a);
}

function actionButtons(inc) {  // dispatch: one button per unit, in the units box
  return (inc.actions || []).filter(permitted).filter((a) => a !== "dispatch").map((a) => (a === "arrive" ? "<button data-arrive>Arrived</button>"
    : `<button ${a === "ack" ? 'class="primary" ' : ""}data-command="${esc(a)}">${esc(ACTION_LABELS[a] || a)}</button>`)).join("");
}

function unitPrompt(inc) {
  const p = arriving.get(inc.incident_id);
  if (!p || !(inc.actions || []).includes("arrive")) return "";
  const last = lastDispatched(inc);  // empty: the unit dispatched last arrived (the worker's default)
  const hint = last ? `on scene: ${unitName(inc, last)}, as dispatched (or type another)` : "unit on scene, e.g. Mobile unit 3";
  return `<div class="actions unit-prompt"><input data-unit placeholder="${esc(hint)}" aria-label="unit on scene" value="${esc(p.unit)}">
    <button class="primary" data-confirm-arrive>Confirm arrival</button> <button data-cancel-arrive>Cancel</button>
    <span class="error" data-unit-error>${esc(p.error)}</span></div>`;
}

async function confirmArrival(id, button) {
  const p = arriving.get(id);
  p.unit = p.unit.trim();
  const inc = state.incidents.get(id);
  const last = inc ? lastDispatched(inc) : "";
  if (!p.unit && !last) { p.error = "Enter the unit on scene."; render(); return; }
  button.disabled = true;
  try {
    // without a unit typed, the worker records the unit dispatched last
    await api(`/api/incidents/${encodeURIComponent(id)}/commands`, { method: "POST", body: JSON.stringify(p.unit ? { command: "arrive", unit: p.unit } : { command: "arrive" }) });
    arriving.delete(id);
    toast(`arrive (${p.unit || unitName(inc, last)}) sent for ${id}`);
  } catch (err) {
    p.error = `Not sent: ${err.message}`;
  }
  render();
}

// Mobile units (issue 13): a panic's nearest available units (from its latest alert: the
// opening, then `units-<n>` updates), by ETA, each with a Dispatch button; the units sent so
// far; and, for who may dispatch, any other registry unit (from /api/units).
function lastDispatched(inc) {
  const sent = inc.dispatched || [];
  return sent.length ? sent[sent.length - 1] : "";
}

// Why a unit may not count: sent to an open incident (busy until it closes), no GPS fix (it
// sent 0,0), a fix worse than units.max_accuracy_m, or no report for units.stale_after_seconds.
function unitNote(u) {
  const busy = (u.assigned_to || []).length ? `, sent to ${u.assigned_to.join(", ")}` : "";
  return busy + (u.fix === "none" ? ", no GPS fix" : u.fix === "poor" ? ", GPS fix too coarse" : u.stale ? ", position stale" : "");
}

function unitName(inc, id) {
  const label = (inc && inc.unit_labels && inc.unit_labels[id]) || id;
  return label === id ? id : `${label} (${id})`;
}

const PROFILE_WORDS = { car: "car", motorbike: "motorbike", foot: "on foot" };

function km(m) {
  return m >= 1000 ? `${(m / 1000).toFixed(1)} km` : `${Math.round(m)} m`;
}

function minutes(s) {
  return `${(s / 60).toFixed(1)} min`;
}

function unitsBox(inc) {
  const near = [...(inc.nearest_units || [])].sort((a, b) => a.eta_s - b.eta_s || a.unit_id.localeCompare(b.unit_id));
  const sent = inc.dispatched || [];
  const open = inc.state === "open";
  const may = open && (inc.actions || []).includes("dispatch") && Boolean(state.me?.may_dispatch);
  if (inc.rule !== "panic" && !near.length && !sent.length) return "";
  const rows = near.map((u) => `<tr data-unit-row="${esc(u.unit_id)}">
      <td class="unit-name">${esc(u.callsign || u.unit_id)}${u.callsign ? ` <span class="meta">${esc(u.unit_id)}</span>` : ""}</td>
      <td>${esc(PROFILE_WORDS[u.profile] || u.profile)}</td><td class="distance">${esc(km(u.distance_m))}</td>
      <td class="eta">${esc(minutes(u.eta_s))}</td><td>${u.in_area ? '<span class="badge area">in area</span>' : ""}</td>
      <td>${sent.includes(u.unit_id) ? '<span class="sent">dispatched</span>' : may ? `<button data-dispatch="${esc(u.unit_id)}">Dispatch</button>` : ""}</td></tr>`).join("");
  const table = near.length ? `<table class="nearest">${rows}</table>` : (open && inc.rule === "panic" ? '<div class="meta">No available unit known near the school.</div>' : "");
  const others = may ? state.units.units.filter((u) => !sent.includes(u.unit_id) && !near.some((n) => n.unit_id === u.unit_id)) : [];
  const pick = chosen.get(inc.incident_id) || "";
  const other = others.length ? `<div class="actions other-unit"><select data-dispatch-other aria-label="another unit">
      <option value="">another unit…</option>${others.map((u) => `<option value="${esc(u.unit_id)}"${u.unit_id === pick ? " selected" : ""}>${esc(u.label)}${u.label !== u.unit_id ? ` (${esc(u.unit_id)})` : ""} · ${esc(u.status)}${unitNote(u)}</option>`).join("")}
      </select><button data-dispatch-selected>Dispatch</button></div>` : "";
  const dispatched = sent.length ? `<div class="dispatched">Dispatched: ${sent.map((id) => `<span class="unit" data-dispatched="${esc(id)}">${esc(unitName(inc, id))}</span>`).join(", ")}</div>` : "";
  return `<div class="units" data-units><div class="units-title">Nearest mobile units <span class="meta">by ETA</span></div>${table}${dispatched}${other}</div>`;
}

const chosen = new Map();  // incident id -> the unit picked in "another unit" (outlives re-renders)

document.addEventListener("change", (e) => {
  if (e.target.matches("select[data-dispatch-other]")) chosen.set(e.target.closest("[data-incident]").dataset.incident, e.target.value);
});

async function dispatchUnit(id, unit, button) {
  const cardEl = button.closest("[data-incident]");
  const note = cardEl.querySelector("[data-note]")?.value || "";
  button.disabled = true;
  try {
    await api(`/api/incidents/${encodeURIComponent(id)}/commands`, { method: "POST", body: JSON.stringify({ command: "dispatch", unit, note }) });
    drafts.delete(id);
    chosen.delete(id);
    toast(`dispatch ${unit} sent for ${id}`);
  } catch (err) {
    toast(`Not sent: ${err.message}`);
    button.disabled = false;
  }
}

async function loadUnits() {
  const u = await api("/api/units");
  state.units = { units: u.units, schools: new Map(u.schools.map((s) => [s.school_id, s])), loadedAt: Date.now(), limits: [u.arrive_target_seconds, u.arrive_limit_seconds] };
}

function card(inc) {
  const open = inc.state === "open";
  const badges = (inc.status === "Exercise" ? '<span class="badge drill">DRILL</span>' : "") + (inc.held ? `<span class="badge held">held: ${esc(inc.held)}</span>` : "");
  const buttons = open ? `<div class="actions">
      <input data-note placeholder="note" aria-label="note" value="${esc(drafts.get(inc.incident_id) || "")}">
      ${actionButtons(inc)}</div>${unitPrompt(inc)}` : "";
  const loud = unacknowledgedPanic(inc) && inc.status !== "Exercise" && !alarm.muted.has(inc.incident_id);
  return `<article class="card ${esc(inc.severity)} ${inc.held ? "held" : ""} ${loud ? "alarm" : ""}" data-incident="${esc(inc.incident_id)}">
    <div class="top"><span class="sev">${esc(inc.severity)}</span>${badges}
      <span class="school-link" data-school="${esc(inc.school_id)}">${esc(inc.school_name)}</span></div>
    <div class="headline">${esc(inc.rule === "panic" ? `PANIC — ${inc.school_name}${inc.zone ? `, ${inc.zone}` : ""}` : inc.headline)}</div>
    ${unacknowledgedPanic(inc) ? `<div class="unacked">NOT ACKNOWLEDGED</div>${loud ? ' <button class="mute" data-mute>Mute on this screen</button>' : ""}` : ""}
    <div class="meta">${esc(inc.rule)} · <span class="stage" data-stage="${esc(inc.stage)}">${esc(stageWords(inc.stage, inc.rule))}</span> · opened ${esc(schoolTime(inc.opened_at, inc.timezone || "UTC"))}
      ${inc.acked_by ? ` · acknowledged by ${esc(inc.acked_by)}` : ""}${inc.arrived_at ? ` · on scene: <span class="unit" data-arrived-unit="${esc(inc.arrived_unit_id || "")}">${esc(inc.arrived_unit_id ? unitName(inc, inc.arrived_unit_id) : inc.arrived_unit)}</span>${inc.arrived_by && inc.arrived_by !== inc.arrived_unit ? ` (reported by ${esc(inc.arrived_by)})` : ""}` : ""}
      ${inc.closed_by ? ` · closed by ${esc(inc.closed_by)}` : ""} · <span class="meta">${esc(inc.incident_id)}</span></div>
    ${open ? countdown(inc) : ""}
    ${unitsBox(inc)}
    ${open ? whereWho(inc) + checklistBox(inc) : ""}
    <div class="evidence">${evidence(inc)}</div>
    ${buttons}
    ${timelineBox(inc)}
  </article>`;
}

// The record of an incident (stages, commands, rejections, paging attempts), on demand: open
// timelines stay open across re-renders and follow live changes.
const timelines = new Map();  // incident id -> rendered rows, for the open ones

function timelineBox(inc) {
  const rows = timelines.get(inc.incident_id);
  return `<details class="timeline" data-timeline="${esc(inc.incident_id)}" ${rows !== undefined ? "open" : ""}>
    <summary>Timeline <span class="meta tz">times in ${esc(zoneLabel(inc.timezone || "UTC"))}</span></summary><div class="rows">${rows || ""}</div></details>`;
}

function timelineRow(t, tz, rule) {
  const what = t.kind === "alert" ? stageWords(t.stage, rule) : t.kind === "notification" ? t.headline : `${t.kind}: ${t.stage}`;
  const at = schoolTime(t.at, tz);
  return `<div class="tl ${esc(t.kind)}"><span class="meta">${esc(at)}</span> ${esc(what)}${t.unit ? `: <span class="unit">${esc(t.unit)}</span>` : ""}${t.actor && t.kind !== "notification" ? ` · ${esc(t.actor)}` : ""}${t.note ? ` — ${esc(t.note)}` : ""}</div>`;
}

async function loadTimeline(id) {
  const { timeline } = await api(`/api/incidents/${encodeURIComponent(id)}/timeline`);
  const tz = state.incidents.get(id)?.timezone || "UTC";
  const rule = state.incidents.get(id)?.rule;
  timelines.set(id, timeline.map((t) => timelineRow(t, tz, rule)).join("") || '<div class="meta">nothing yet</div>');
  render();
}

document.addEventListener("toggle", (e) => {
  const d = e.target;
  if (!d.matches || !d.matches("details[data-timeline]")) return;
  const id = d.dataset.timeline;
  if (d.open && !timelines.has(id)) loadTimeline(id).catch(() => {});
  if (!d.open) timelines.delete(id);
}, true);

// Attention: an unacknowledged real panic sounds a looping two-tone alarm (Web Audio, no file)
// until it is acknowledged or muted on this screen, its card flashes and the tab title
// flashes; a drill gets one soft chime. Browsers start audio only after a user gesture: the
// sign-in, or any click, unlocks it; until then the "Enable alarm sound" button shows.
const alarm = { ctx: null, on: false, nodes: null, timers: [], muted: new Set(), chimed: new Set(), notified: new Set(), title: document.title };

function audio() {
  const AC = window.AudioContext || window.webkitAudioContext;
  if (!alarm.ctx && AC) alarm.ctx = new AC();
  if (alarm.ctx && alarm.ctx.state === "suspended") alarm.ctx.resume().then(attention, () => {});
  return alarm.ctx;
}

function sounding() {
  return [...state.incidents.values()].filter((i) => unacknowledgedPanic(i) && i.status !== "Exercise" && !alarm.muted.has(i.incident_id));
}

function attention() {
  const loud = sounding();
  if (loud.length && !alarm.on) startAlarm(loud[0]);
  if (!loud.length && alarm.on) stopAlarm();
  for (const inc of state.incidents.values()) {
    if (!unacknowledgedPanic(inc)) continue;
    if (inc.status === "Exercise" && !alarm.chimed.has(inc.incident_id)) { alarm.chimed.add(inc.incident_id); chime(); }
    if (inc.status !== "Exercise" && !alarm.notified.has(inc.incident_id) && window.Notification && Notification.permission === "granted") {
      alarm.notified.add(inc.incident_id);
      new Notification(`PANIC — ${inc.school_name}`, { body: inc.headline, tag: inc.incident_id, requireInteraction: true });
    }
  }
  $("#sound").hidden = Boolean(alarm.ctx && alarm.ctx.state === "running");
}

function startAlarm(inc) {
  alarm.on = true;
  const ctx = audio();
  if (ctx) {
    const { osc, gain } = tone(ctx, "square", 880, 0.25);
    alarm.nodes = { osc, gain };
    let high = true;
    alarm.timers.push(setInterval(() => { high = !high; osc.frequency.setValueAtTime(high ? 880 : 660, ctx.currentTime); }, 400));
  }
  const flashTitle = `⚠ PANIC — ${inc.school_name}`;
  alarm.timers.push(setInterval(() => { document.title = document.title === flashTitle ? alarm.title : flashTitle; }, 700));
  document.title = flashTitle;
}

function stopAlarm() {
  alarm.on = false;
  alarm.timers.forEach(clearInterval);
  alarm.timers = [];
  if (alarm.nodes) { alarm.nodes.osc.stop(); alarm.nodes.gain.disconnect(); alarm.nodes = null; }
  document.title = alarm.title;
}

function chime() {
  const ctx = audio();
  if (!ctx) return;
  const { osc, gain } = tone(ctx, "sine", 523, 0.06);
  gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 1.2);
  osc.stop(ctx.currentTime + 1.2);
}

function tone(ctx, type, frequency, volume) {
  const gain = ctx.createGain();
  gain.gain.setValueAtTime(volume, ctx.currentTime);
  gain.connect(ctx.destination);
  const osc = ctx.createOscillator();
  osc.type = type;
  osc.frequency.value = frequency;
  osc.connect(gain);
  osc.start();
  return { osc, gain };
}

// For tests and the curious: what the attention cues are doing now.
window.huxueAttention = () => ({ audio: alarm.ctx ? alarm.ctx.state : "none", sounding: alarm.on, title: document.title, muted: [...alarm.muted] });

function render() {
  const all = [...state.incidents.values()].filter(visible);
  const open = ordered(all.filter((i) => i.state === "open"));
  const closed = all.filter((i) => i.state !== "open").sort((a, b) => b.updated_at.localeCompare(a.updated_at)).slice(0, 30);
  const active = document.activeElement?.matches("[data-unit], [data-note]") ? document.activeElement : null;
  const typing = active && { id: active.closest("[data-incident]").dataset.incident, field: active.matches("[data-unit]") ? "[data-unit]" : "[data-note]" };
  $("#incidents").innerHTML = open.map(card).join("") || '<p class="meta">No open incidents.</p>';
  if (typing) focusField(typing.id, typing.field);  // a live update re-rendered the card being typed into
  $("#closed").innerHTML = closed.map(card).join("");
  $("#open-count").textContent = `(${open.length})`;
  const rules = new Set([...state.incidents.values()].map((i) => i.rule));
  const sel = $("#f-rule");
  for (const r of rules) if (![...sel.options].some((o) => o.value === r)) sel.add(new Option(r, r));
  tick();
  attention();
  if (!$("#map").hidden) drawMap();
}

function tick() {
  const now = Date.now();
  document.querySelectorAll(".countdown").forEach((el) => {
    const left = Math.round((Date.parse(el.dataset.at) - now) / 1000);
    const a = Math.abs(left);
    const text = `${Math.floor(a / 60)}:${String(a % 60).padStart(2, "0")}`;
    el.textContent = left >= 0 ? text : `overdue ${text}`;
    el.classList.toggle("overdue", left < 0);
  });
}

document.addEventListener("click", async (e) => {
  audio();  // any click is the gesture that lets the page sound the alarm
  if (e.target.id === "sound") { attention(); return; }
  const mute = e.target.closest("button[data-mute]");
  if (mute) { alarm.muted.add(mute.closest("[data-incident]").dataset.incident); render(); return; }
  const arrive = e.target.closest("button[data-arrive], button[data-confirm-arrive], button[data-cancel-arrive]");
  if (arrive) {
    const id = arrive.closest("[data-incident]").dataset.incident;
    if (arrive.matches("[data-arrive]")) { arriving.set(id, arriving.get(id) || { unit: "", error: "" }); render(); focusField(id, "[data-unit]"); }
    if (arrive.matches("[data-cancel-arrive]")) { arriving.delete(id); render(); }
    if (arrive.matches("[data-confirm-arrive]")) await confirmArrival(id, arrive);
    return;
  }
  const send = e.target.closest("button[data-dispatch], button[data-dispatch-selected]");
  if (send) {
    const id = send.closest("[data-incident]").dataset.incident;
    const unit = send.matches("[data-dispatch]") ? send.dataset.dispatch : send.closest("[data-incident]").querySelector("select[data-dispatch-other]").value;
    if (!unit) { toast("Choose a unit to dispatch"); return; }
    await dispatchUnit(id, unit, send);
    return;
  }
  const button = e.target.closest("button[data-command]");
  if (button) {
    const cardEl = button.closest("[data-incident]");
    const id = cardEl.dataset.incident;
    const note = cardEl.querySelector("[data-note]")?.value || "";
    button.disabled = true;
    try {
      await api(`/api/incidents/${encodeURIComponent(id)}/commands`, { method: "POST", body: JSON.stringify({ command: button.dataset.command, note }) });
      drafts.delete(id);
      toast(`${button.dataset.command} sent for ${id}`);
    } catch (err) {
      toast(`Not sent: ${err.message}`);
      button.disabled = false;
    }
    return;
  }
  const link = e.target.closest("[data-school]");
  if (link) openSchool(link.dataset.school);
  if (e.target.id === "close-school") { state.school = null; $("#school").hidden = true; }
});

async function openSchool(id) {
  state.school = id;
  const s = await api(`/api/schools/${encodeURIComponent(id)}`);
  const posts = s.posts.map((p) => `<tr><td>${esc(p.id)}</td><td>${p.on_duty.length} / ${p.required_officers}</td>
    <td>${p.on_duty.map((o) => esc(o.officer_id)).join(", ") || "—"}</td></tr>`).join("");
  const offline = s.offline.map((d) => `<tr><td>${esc(d.id)}</td><td>${esc(d.kind)}</td><td>${esc(d.zone)}</td>
    <td class="status-${esc(d.status)}">${esc(d.problem || d.status)}</td></tr>`).join("");
  const silences = s.silences.map((x) => `<div class="banner silence">Silenced ${esc(JSON.stringify(x.scope) === "{}" ? "whole school" : Object.values(x.scope)[0])}
    until ${new Date(x.ends).toLocaleTimeString()} by ${esc(x.actor)}: ${esc(x.reason)} (${x.suppressed} held back)</div>`).join("");
  const lockdown = s.lockdown ? `<div class="banner lockdown">${esc(s.lockdown.headline)}</div>` : "";
  $("#school").innerHTML = `<div class="top"><h2>${esc(s.name)} <span class="meta">${esc(s.id)} · ${esc(s.timezone)}</span></h2>
      <button id="close-school">Close</button></div>${lockdown}${silences}
    <h3>Gate posts</h3><table><tr><th>post</th><th>on duty</th><th>officers</th></tr>${posts || '<tr><td colspan="3">none</td></tr>'}</table>
    <h3>Devices: ${s.devices.length}, not OK: ${s.offline.length}</h3>
    <table><tr><th>device</th><th>kind</th><th>zone</th><th>status</th></tr>${offline || '<tr><td colspan="4">all reporting</td></tr>'}</table>`;
  $("#school").hidden = false;
}

// Where and who: the school's address, people to call, site plan and the rule's checklist,
// on each open card. Schools come from /api/schools (state.schools); checklist ticks are
// local to this page and survive re-renders.
const ROLE_WORDS = { guard_post: "Guard post", principal: "Principal", police_station: "Police station" };
const brokenPlans = new Set();  // site-plan URLs that failed to load: shown as text from then on
const ticked = new Map();  // incident id -> Set of ticked checklist items

function roleWords(role) {
  return ROLE_WORDS[role] || String(role).replace(/_/g, " ");
}

// Our own authenticated URL, or an http(s) one; anything else is not loaded.
function planUrl(u) {
  return typeof u === "string" && /^\/api\/schools\/[^/]+\/site-plan$/.test(u) ? u : webUrl(u);
}

function sitePlan(s) {
  const url = planUrl(s.site_plan_url);
  if (!url) return "";
  if (brokenPlans.has(url)) return '<span class="plan-missing">site plan unavailable</span>';
  return `<a class="plan" href="${esc(url)}" target="_blank" rel="noopener noreferrer"><img class="site-plan" src="${esc(url)}" alt="site plan"></a>`;
}

function whereWho(inc) {
  const s = state.schools.get(inc.school_id);
  if (!s) return "";
  const calls = (s.contacts || []).map((c) => `<a class="call" href="tel:${esc(String(c.phone).replace(/[^0-9+]/g, ""))}">
    ${esc(roleWords(c.role))}${c.name ? ` · ${esc(c.name)}` : ""} <span class="phone">${esc(c.phone)}</span></a>`).join("");
  if (!s.address && !calls && !s.site_plan_url) return "";
  return `<div class="where-who"><div class="where"><div class="school-name">${esc(s.name)}</div>
      ${s.address ? `<div class="address">${esc(s.address)}</div>` : ""}<div class="contacts">${calls}</div></div>${sitePlan(s)}</div>`;
}

function checklistBox(inc) {
  const items = inc.checklist || [];
  if (!items.length) return "";
  const done = ticked.get(inc.incident_id) || new Set();
  return `<fieldset class="checklist"><legend>What to do</legend>${items.map((item, i) => `<label>
    <input type="checkbox" data-check="${i}" ${done.has(i) ? "checked" : ""}> ${esc(item)}</label>`).join("")}</fieldset>`;
}

document.addEventListener("change", (e) => {
  if (!e.target.matches("input[data-check]")) return;
  const id = e.target.closest("[data-incident]").dataset.incident;
  const done = ticked.get(id) || new Set();
  const i = Number(e.target.dataset.check);
  if (e.target.checked) done.add(i); else done.delete(i);
  ticked.set(id, done);
});

// An image that fails (missing file, unreachable NVR) becomes text, not a broken-image icon.
// `error` does not bubble: listen in the capture phase.
document.addEventListener("error", (e) => {
  const img = e.target;
  if (!(img instanceof HTMLImageElement) || !img.classList.contains("site-plan")) return;
  brokenPlans.add(img.getAttribute("src"));
  const link = img.closest("a.plan");
  if (link && link.parentNode) link.outerHTML = '<span class="plan-missing">site plan unavailable</span>';  // else: re-rendered already
}, true);

// The map: an inline SVG of the schools' coordinates (equirectangular, fitted to their
// bounding box; no tiles, nothing external). A school with open incidents takes the colour of
// its most urgent one, and flashes while that one is real and unacknowledged; a click filters the incident list to it (again: all).
const MAP = { width: 900, height: 520, margin: 40, labels: 240 };  // labels: room kept right of the dots

function project(placed) {
  const lat0 = placed.reduce((sum, s) => sum + s.coordinates.lat, 0) / placed.length;
  const kx = Math.cos((lat0 * Math.PI) / 180);  // a degree of longitude is shorter away from the equator
  const xs = placed.map((s) => s.coordinates.lon * kx), ys = placed.map((s) => -s.coordinates.lat);
  const [minX, minY] = [Math.min(...xs), Math.min(...ys)];
  const spanX = Math.max(Math.max(...xs) - minX, 1e-6), spanY = Math.max(Math.max(...ys) - minY, 1e-6);
  const room = MAP.width - 2 * MAP.margin - MAP.labels;
  const scale = Math.min(room / spanX, (MAP.height - 2 * MAP.margin) / spanY);
  const ox = MAP.margin + (room - spanX * scale) / 2, oy = (MAP.height - spanY * scale) / 2;
  return (s) => [ox + (s.coordinates.lon * kx - minX) * scale, oy + (-s.coordinates.lat - minY) * scale];
}

// Mobile units on the map (issue 13): each unit with a known position is a triangle (filled:
// available; hollow: busy, offline or stale), refreshed from /api/units every 5 s while the
// map is open. "Coverage" colours each school by its best ETA now: a unit within the 3-minute
// arrive target, within the 5-minute limit, none in time, or unknown (no coordinates).
const COVERAGE_WORDS = { target: "a unit within", limit: "a unit within", none: "no available unit within", unknown: "no coordinates" };

function coverageTitle(c) {
  if (!c) return "";
  const [target, limit] = state.units.limits || [180, 300];
  if (c.coverage === "unknown") return " — coverage unknown (no coordinates)";
  const best = c.best ? `, best ${c.best.label} ${minutes(c.best.eta_s)}` : "";
  return ` — ${COVERAGE_WORDS[c.coverage]} ${minutes(c.coverage === "target" ? target : limit)}${best}`;
}

function unitMarks(at) {
  return state.units.units.filter((u) => u.lat !== null && u.lon !== null).map((u) => {
    const [x, y] = at({ coordinates: { lat: u.lat, lon: u.lon } });
    const cls = `unit-dot ${u.available ? "available" : "busy"}${u.stale ? " stale" : ""}`;
    const age = u.age_s === null ? "" : `, ${Math.round(u.age_s)} s ago`;
    return `<g class="${cls}" data-map-unit="${esc(u.unit_id)}" data-status="${esc(u.status)}"><title>${esc(u.label)} (${esc(u.unit_id)}) — ${esc(u.status)}${unitNote(u)}${esc(age)}</title>
      <polygon points="${x.toFixed(1)},${(y - 8).toFixed(1)} ${(x - 7).toFixed(1)},${(y + 5).toFixed(1)} ${(x + 7).toFixed(1)},${(y + 5).toFixed(1)}"></polygon>
      <text x="${(x + 9).toFixed(1)}" y="${(y + 4).toFixed(1)}">${esc(u.label)}</text></g>`;
  }).join("");
}

function drawMap() {
  const schools = [...state.schools.values()];
  const placed = schools.filter((s) => s.coordinates);
  const worst = new Map();  // school -> its most urgent open incident
  for (const inc of ordered([...state.incidents.values()].filter((i) => i.state === "open"))) if (!worst.has(inc.school_id)) worst.set(inc.school_id, inc);
  const located = state.units.units.filter((u) => u.lat !== null && u.lon !== null).map((u) => ({ coordinates: { lat: u.lat, lon: u.lon } }));
  const at = placed.length ? project([...placed, ...located]) : null;
  const selected = $("#f-school").value;
  const dots = placed.map((s) => {
    const [x, y] = at(s);
    const inc = worst.get(s.id);
    const waiting = inc && !inc.acked_at && inc.status !== "Exercise";  // only what still needs someone flashes
    const cov = state.units.schools.get(s.id);
    const cls = `school-dot${inc ? ` open sev-${esc(inc.severity)}` : ""}${waiting ? " flash" : ""}${s.id === selected ? " selected" : ""}${cov ? ` cov-${esc(cov.coverage)}` : ""}`;
    return `<g class="${cls}" data-map-school="${esc(s.id)}" data-severity="${inc ? esc(inc.severity) : ""}" data-coverage="${cov ? esc(cov.coverage) : ""}" tabindex="0">
      <title>${esc(s.name)}${inc ? ` — ${esc(inc.headline)}` : ""}${esc(coverageTitle(cov))}</title>
      <circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${inc ? 11 : 7}"></circle>
      <text x="${(x + 14).toFixed(1)}" y="${(y + 4).toFixed(1)}">${esc(s.name)}</text></g>`;
  }).join("");
  const unplaced = schools.filter((s) => !s.coordinates);
  const units = at ? unitMarks(at) : "";
  const hasUnits = state.units.units.length > 0;
  const [target, limit] = state.units.limits || [180, 300];
  const legend = state.coverageMode ? `<span class="legend"><span class="key cov-target"></span> within ${minutes(target)} <span class="key cov-limit"></span> within ${minutes(limit)}
      <span class="key cov-none"></span> none in time <span class="key cov-unknown"></span> unknown</span>` : "";
  const tools = hasUnits ? `<div class="map-tools"><button id="coverage-toggle" type="button" aria-pressed="${state.coverageMode}">Coverage</button>${legend}</div>` : "";
  $("#map").innerHTML = `${tools}<svg class="city${state.coverageMode ? " coverage" : ""}" viewBox="0 0 ${MAP.width} ${MAP.height}" role="img" aria-label="map of the schools">
      <rect class="land" width="${MAP.width}" height="${MAP.height}"></rect>${dots}${units}</svg>
    ${placed.length ? "" : '<p class="meta">No school has coordinates.</p>'}
    ${unplaced.length ? `<p class="meta not-placed">Not placed: ${unplaced.map((s) => esc(s.name)).join(", ")}</p>` : ""}`;
}

function toggleMap() {
  const map = $("#map");
  map.hidden = !map.hidden;
  $("#map-toggle").setAttribute("aria-pressed", String(!map.hidden));
  if (!map.hidden) { drawMap(); refreshUnits(); }
}

async function refreshUnits() {
  try { await loadUnits(); } catch (err) { return; }
  if (!$("#map").hidden) drawMap();
}

setInterval(() => { if (state.me && (!$("#map").hidden || Date.now() - state.units.loadedAt > 30000)) refreshUnits(); }, 5000);

document.addEventListener("click", (e) => {
  if (e.target.id === "map-toggle") { toggleMap(); return; }
  if (e.target.id === "coverage-toggle") { state.coverageMode = !state.coverageMode; drawMap(); return; }
  const dot = e.target.closest && e.target.closest("[data-map-school]");
  if (!dot) return;
  const sel = $("#f-school");
  sel.value = sel.value === dot.dataset.mapSchool ? "" : dot.dataset.mapSchool;
  render();
});

// Liveness: the server sends a ping every 2 s. No ping or change for 5 s, or a stream error:
// a full-width CONNECTION LOST banner with the time the data was last current, then
// reconnects with backoff (1 s doubling to 30 s); a session that ended asks to sign in again;
// every reconnect reloads the open incidents (a panic raised meanwhile must appear).
const STALE_AFTER_MS = 5000;
const live = { lastSeen: 0, down: false, retryMs: 1000, timer: null };

function alive() {
  live.lastSeen = Date.now();
  live.retryMs = 1000;
  if (live.down) { live.down = false; $("#stale").hidden = true; }
  $("#live").className = "live on";
}

function connectionLost(why = "") {
  if (state.events) { state.events.close(); state.events = null; }
  $("#live").className = "live off";
  const since = new Date(live.lastSeen || Date.now()).toLocaleTimeString([], { hour12: false });
  $("#stale").textContent = `CONNECTION LOST — data stale since ${since}${why}`;
  $("#stale").hidden = false;
  live.down = true;
  if (!why) reconnectLater();
}

function reconnectLater() {
  if (live.timer) return;
  live.timer = setTimeout(async () => {
    live.timer = null;
    try {
      await api("/api/me");
    } catch (err) {
      if (err.message === "signed out") { connectionLost(" — sign in again"); return; }
      live.retryMs = Math.min(live.retryMs * 2, 30000);
      reconnectLater();
      return;
    }
    await loadIncidents().catch(() => {});
    follow();
  }, live.retryMs);
}

setInterval(() => { if (state.me && !live.down && live.lastSeen && Date.now() - live.lastSeen > STALE_AFTER_MS) connectionLost(); }, 1000);

function follow() {
  const es = new EventSource("/api/stream");
  state.events = es;
  es.onopen = alive;
  es.onerror = () => connectionLost();
  es.addEventListener("ping", alive);
  es.addEventListener("change", (e) => {
    alive();
    const c = JSON.parse(e.data);
    if (c.incident) { state.incidents.set(c.incident.incident_id, c.incident); render(); }
    if (c.type === "incident" && timelines.has(c.id)) loadTimeline(c.id).catch(() => {});
    if (state.school && c.school_id === state.school) openSchool(state.school);
  });
}

async function loadIncidents() {
  const open = (await api("/api/incidents?state=open&limit=5000")).incidents;
  const closed = (await api("/api/incidents?state=closed&limit=50")).incidents;
  state.incidents = new Map([...open, ...closed].map((i) => [i.incident_id, i]));
  render();
}

async function start() {
  state.me = await api("/api/me");
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `${state.me.username} (${state.me.role}${state.me.school ? " · " + state.me.school : ""})`;
  const { schools } = await api("/api/schools");
  state.schools = new Map(schools.map((s) => [s.id, s]));
  const sel = $("#f-school");
  for (const s of schools) if (![...sel.options].some((o) => o.value === s.id)) sel.add(new Option(`${s.name} (${s.id})`, s.id));
  await loadUnits().catch(() => {});  // the "another unit" choices and the map's units
  await loadIncidents();
  if (!state.events) follow();
}

function focusField(id, field) {
  const input = document.querySelector(`#incidents [data-incident="${CSS.escape(id)}"] input${field}`);
  if (input) { input.focus(); input.setSelectionRange(input.value.length, input.value.length); }
}

document.addEventListener("input", (e) => {
  if (e.target.matches("input[data-note]")) drafts.set(e.target.closest("[data-incident]").dataset.incident, e.target.value);
  if (!e.target.matches("input[data-unit]")) return;
  const p = arriving.get(e.target.closest("[data-incident]").dataset.incident);
  if (p) { p.unit = e.target.value; p.error = ""; }
});

document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && e.target.matches("input[data-unit]")) e.target.closest("[data-incident]").querySelector("button[data-confirm-arrive]").click();
});

for (const id of ["#f-school", "#f-severity", "#f-rule", "#f-status"]) $(id).addEventListener("change", render);
setInterval(tick, 1000);
start().catch(() => {});
