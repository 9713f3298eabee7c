// The live dashboard: one snapshot from /api/dashboard, then server-sent events from
// /api/events. No polling: the snapshot is reloaded only when an event arrives; a
// one-second timer re-renders the running counters from the times already known.
// Many switches (issue 17): this node's event stream carries its own switch's events only,
// and a standby's none of the calls it does not record, so while other switches are shown,
// or on a standby, the snapshot is also reloaded every OTHERS_RELOAD ms.
"use strict";

const state = { snap: null, offset: 0, reload: null, others: null, fresh: new Map() };
const OTHERS_RELOAD = 5000;
const filter = new URLSearchParams(window.location.search).get("switch") || "";

const $ = (id) => document.getElementById(id);
const now = () => Date.now() / 1000 + state.offset; // the server's clock
const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)} %`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function duration(s) {
  s = Math.max(0, Math.floor(s));
  const m = Math.floor(s / 60);
  return m ? `${m} min ${String(s % 60).padStart(2, "0")} s` : `${s} s`;
}

function limit(s) { // a configured threshold: "3 min", "1 min", "45 s"
  return s >= 60 && s % 60 === 0 ? `${s / 60} min` : duration(s);
}

function clock(at) {
  // The switch's time zone, 24-hour clock, whatever the browser's own settings.
  const zone = state.snap ? state.snap.timezone : undefined;
  return new Date(at * 1000).toLocaleTimeString("en-GB", { timeZone: zone, hourCycle: "h23" });
}

function ringsNow(call) {
  return Math.floor(Math.max(0, now() - call.state_since) / state.snap.ring_period) + 1;
}

function stateBadge(call) {
  const since = now() - call.state_since;
  switch (call.state) {
    case "ringing": {
      const n = ringsNow(call);
      const cls = n > state.snap.critical_rings ? "critical" : n > state.snap.warn_rings ? "late" : "ringing";
      return el("span", { class: `badge ${cls}` }, `ringing ${call.agent || ""} · ring ${n}`);
    }
    case "hold": return el("span", { class: "badge hold" }, `on hold ${duration(since)}`);
    case "unclear": return el("span", { class: "badge unclear" }, `unclear line ${duration(since)}`);
    case "silent": return el("span", { class: "badge silent" }, `silent · stage ${call.silent_stage || "1"}`);
    case "transferring": return el("span", { class: "badge transferring" }, `transferring · ${call.transfer_state || ""}`);
    case "talking": return el("span", { class: "badge talking" }, "talking");
    case "waiting": return el("span", { class: "badge late" }, "waiting for an agent");
    default: return el("span", { class: "badge" }, call.state);
  }
}

function renderLive() {
  const body = $("live").tBodies[0];
  const rows = state.snap.live.map((c) => el("tr", { "data-call": c.call_id, "data-switch": c.switch },
    el("td", {}, c.switch), el("td", {}, c.caller || c.call_id), el("td", {}, c.agent || "–"), el("td", {}, stateBadge(c)),
    el("td", {}, duration(now() - c.arrived_at))));
  body.replaceChildren(...rows);
  $("live-empty").hidden = rows.length > 0;
  $("live").hidden = rows.length === 0;
  $("n-live").textContent = rows.length;
}

function alarmItem(a, fresh) {
  const level = a.level === "critical" ? "critical" : "warning";
  return el("li", { class: fresh ? `${level} fresh` : level, "data-call": a.call_id },
    el("span", { class: "when" }, clock(a.at)),
    el("span", { class: "what" }, "Agent ", el("strong", {}, a.agent || "?"), ` has rung ${a.rings} times unanswered`),
    el("span", { class: "lvl" }, level));
}

function renderAlarms() {
  const list = $("alarms");
  const key = (a) => `${a.call_id}:${a.level}:${a.rings}`;
  list.replaceChildren(...state.snap.alarms.map((a) => alarmItem(a, (state.fresh.get(key(a)) || 0) > now())));
  $("alarms-empty").hidden = state.snap.alarms.length > 0;
  $("n-alarms").textContent = state.snap.alarms.length;
}

function renderChart(agents) {
  const rows = agents.filter((a) => a.answered > 0 || a.name);
  const W = 900, bar = 24, gap = 12, left = 150, right = 70, top = 8;
  const H = top + rows.length * (bar + gap) + 22;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `share of calls answered within ${state.snap.warn_rings} rings, per agent`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  const x = (f) => left + f * (W - left - right);
  for (const f of [0, 0.5, 0.8, 1]) {
    add("line", { x1: x(f), x2: x(f), y1: top - 4, y2: H - 18, stroke: f === 0.8 ? "#e08a00" : "#e1e6eb",
      "stroke-dasharray": f === 0.8 ? "4 3" : "" });
    add("text", { x: x(f), y: H - 4, "text-anchor": "middle", class: "axis" }, `${f * 100} %`);
  }
  rows.forEach((a, i) => {
    const y = top + i * (bar + gap);
    const sl = a.service_level;
    add("text", { x: left - 10, y: y + bar * 0.7, "text-anchor": "end" }, a.name ? `${a.agent} ${a.name}` : a.agent);
    add("rect", { x: x(0), y, width: x(1) - x(0), height: bar, rx: 4, fill: "#eef1f4" });
    if (sl !== null) {
      const colour = sl >= 0.8 ? "#2f9e6e" : sl >= 0.5 ? "#e08a00" : "#d64545";
      add("rect", { x: x(0), y, width: Math.max(2, x(sl) - x(0)), height: bar, rx: 4, fill: colour });
    }
    add("text", { x: x(1) + 8, y: y + bar * 0.7 }, sl === null ? "no calls" : pct(sl));
  });
  $("chart").replaceChildren(svg);
}

function renderAgents() {
  const agents = state.snap.agents;
  renderChart(agents);
  $("agents").tBodies[0].replaceChildren(...agents.map((a) => el("tr", {},
    el("td", {}, a.name ? `${a.agent} ${a.name}` : a.agent), el("td", {}, a.answered),
    el("td", {}, `${a.within_three} (${pct(a.service_level)})`), el("td", {}, a.max_rings ?? "–"),
    el("td", {}, a.alarms_warning + a.alarms_critical), el("td", {}, a.agent_first_hangups),
    el("td", {}, a.long_calls), el("td", {}, a.holds), el("td", {}, a.transfers))));
  const answered = agents.reduce((n, a) => n + a.answered, 0);
  const within = agents.reduce((n, a) => n + a.within_three, 0);
  $("sl").textContent = answered ? pct(within / answered) : "–";
  $("sl-sub").textContent = answered ? `${within} of ${answered} answered calls` : "no answered calls yet";
}

const CHOSE = { keep: "waited on", message: "left a message", callback: "asked for a call-back", none: "chose nothing" };

function choices(c) { // what the held callers chose at the limit: "1 waited on, 1 left a message"
  return Object.entries(c || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${CHOSE[k] || k}`).join(", ");
}

function renderToday() {
  const t = state.snap.today;
  const chose = choices(t.hold_choices);
  $("n-holds").textContent = t.holds;
  $("holds-sub").textContent = t.holds ? `longest ${duration(t.hold_longest)}, ${t.holds_over_minute} over ${limit(state.snap.hold_limit)}`
    + (chose ? `; at the limit ${chose}` : "") : "";
  $("n-transfers").textContent = t.transfers;
  $("transfers-sub").textContent = Object.entries(t.transfer_outcomes).map(([k, v]) => `${v} ${k}`).join(", ");
}

function nextAttempt(c) {
  const at = "next_attempt_at" in c ? c.next_attempt_at : c.next_attempt;
  if (at === null || at === undefined) return "no opening";
  return at <= now() ? "due" : clock(at);
}

function renderCallbacks() {
  const rows = state.snap.callbacks || [];
  $("callbacks").tBodies[0].replaceChildren(...rows.map((c) => el("tr", { "data-callback": c.callback_id },
    el("td", {}, c.switch), el("td", {}, c.place), el("td", {}, c.phone || "?"), el("td", {}, clock(c.at)), el("td", {}, c.held_by || "–"),
    el("td", {}, c.best_time || "today"), el("td", {}, c.attempts), el("td", {}, c.status),
    el("td", {}, c.status === "dialling" ? "now" : nextAttempt(c)),
    el("td", {}, c.outcome || "–"))));
  $("callbacks-empty").hidden = rows.length > 0;
  $("callbacks").hidden = rows.length === 0;
}

function renderMessages() {
  const rows = state.snap.messages || [];
  $("messages").tBodies[0].replaceChildren(...rows.map((m) => el("tr", { "data-message": m.message_id },
    el("td", {}, clock(m.at)), el("td", {}, m.phone || "?"), el("td", {}, m.for_agent || "–"),
    el("td", {}, m.held_seconds === null || m.held_seconds === undefined ? "–" : duration(m.held_seconds)),
    el("td", {}, m.recorded === 0 ? "empty" : (m.recording || "–")))));
  $("messages-empty").hidden = rows.length > 0;
  $("messages").hidden = rows.length === 0;
}

function renderSwitches() {
  const select = $("switch");
  const names = [...new Set([...state.snap.switches, state.snap.switch, ...(filter ? [filter] : [])])].sort();
  select.replaceChildren(el("option", { value: "" }, "every switch"),
    ...names.map((n) => el("option", { value: n }, n === state.snap.switch ? `${n} (this node)` : n)));
  select.value = filter;
}

function renderLimits() {
  // The thresholds in the page's labels are the controller's configuration (stated once there).
  const text = { warn_rings: state.snap.warn_rings, long_call: limit(state.snap.long_call_seconds) };
  for (const e of document.querySelectorAll("[data-snap]")) e.textContent = text[e.dataset.snap];
}

function render() {
  if (!state.snap) return;
  renderLimits();
  renderSwitches();
  $("day").textContent = state.snap.day;
  $("clock").textContent = clock(now());
  renderLive();
  renderAlarms();
  renderAgents();
  renderToday();
  renderCallbacks();
  renderMessages();
}

async function load() {
  const query = filter ? `?switch=${encodeURIComponent(filter)}` : "";
  const reply = await fetch(`/api/dashboard${query}`, { credentials: "same-origin", cache: "no-store" });
  if (reply.status === 401) { window.location = "/login"; return; }
  if (!reply.ok) { $("link").textContent = `error ${reply.status}`; $("link").className = "link down"; return; }
  const snap = await reply.json();
  state.offset = snap.now - Date.now() / 1000;
  state.snap = snap;
  render();
  clearTimeout(state.others);
  if (snap.role !== "leader" || (filter !== snap.switch && snap.switches.some((n) => n !== snap.switch))) {
    state.others = setTimeout(load, OTHERS_RELOAD); // other switches' events never reach this node
  }
}

function reloadSoon() {
  clearTimeout(state.reload);
  state.reload = setTimeout(load, 150); // one reload for a burst of events
}

function listen() {
  const source = new EventSource("/api/events");
  source.onopen = () => { $("link").textContent = "live"; $("link").className = "link up"; load(); };
  source.onerror = () => { $("link").textContent = "reconnecting…"; $("link").className = "link down"; };
  source.addEventListener("ring.alarm", (msg) => {
    const a = JSON.parse(msg.data);
    state.fresh.set(`${a.call_id}:${a.level}:${a.rings}`, now() + 3);
    if (state.snap) {
      state.snap.alarms.unshift({ ...a, alarm_id: `live-${a.at}` });
      renderAlarms();
    }
  });
  source.onmessage = reloadSoon;
  for (const kind of ["call.arrived", "greeting.played", "silent.stage", "ring.started", "ring.alarm",
    "ring.answered", "ring.noanswer", "hold.start", "hold.resume", "hold.abandon", "hold.choices", "hold.choice",
    "unclear.start", "unclear.stage",
    "message.recorded", "callback.requested", "callback.stage", "transfer.state", "call.ended"]) {
    source.addEventListener(kind, reloadSoon);
  }
}

$("switch").addEventListener("change", (e) => {
  const params = new URLSearchParams(window.location.search);
  if (e.target.value) params.set("switch", e.target.value); else params.delete("switch");
  window.location.search = params.toString();
});
load().then(listen);
setInterval(() => { if (state.snap) { $("clock").textContent = clock(now()); renderLive(); } }, 1000);
