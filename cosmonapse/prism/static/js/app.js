// Prism's page: wires the channel to the store and the views, and runs one render loop.
// Ingest is O(1) per Signal; drawing happens once per animation frame and only for the
// view on screen, so a flood costs parsing and bookkeeping, not layout.
import { BrainView } from "./brain.js";
import { Channel } from "./channel.js";
import { MetricsView } from "./metrics.js";
import { SignalsView, inspect } from "./signals.js";
import { Metrics, Ring, Roster, Traces } from "./store.js";
import { TracesView } from "./traces.js";
import { badge, clock, el, every, fmt, links, summary } from "./util.js";
import { jsonTree } from "./json.js";

const params = new URLSearchParams(location.search);
const CAPACITY = Math.max(1000, Math.min(500000, Number(params.get("ring")) || 50000));
const LIVE_ROWS = 150;

const ring = new Ring(CAPACITY);
const traces = new Traces();
const metrics = new Metrics();
const roster = new Roster();
const state = { tab: "brain", paused: false, held: [], heldDropped: 0, dropped: 0, total: 0, namespace: "—", rateWindow: [] };

const hooks = {
  openTrace(id) { showTab("traces"); tracesView.open(id); },
  filterTrace(id) { showTab("signals"); signalsView.setFilter({ trace: id }); },
};
const signalsView = new SignalsView(ring, hooks);
const tracesView = new TracesView(ring, traces, hooks);
const metricsView = new MetricsView(metrics, roster, traces, hooks);
let brain = null;

// --- ingest ---------------------------------------------------------------
const live = [];
let liveDirty = false;

function ingest(sig) {
  if (!sig || typeof sig !== "object" || typeof sig.type !== "string") return;
  const rec = ring.push(sig);
  state.total += 1;
  traces.add(rec);
  metrics.add(rec, Math.floor(Date.now() / 1000));
  const [id, dir] = roster.add(rec);
  if (brain) {
    const p = sig.payload || {};
    let targets = null;
    if (!id && (rec.type === "TASK" || rec.type === "TASK_OFFER")) targets = roster.covering(p.capabilities);
    else if (!id && rec.type === "DISCOVER") targets = roster.covering(null);
    brain.signal(rec, id, dir, targets);
  }
  signalsView.add(rec);
  live.push(rec);
  if (live.length > LIVE_ROWS * 2) live.splice(0, live.length - LIVE_ROWS);
  liveDirty = true;
}

let ingestErrors = 0;
function safeIngest(sig) {
  try {
    ingest(sig);
  } catch (e) {
    // A Signal the views cannot digest must not stop the ones behind it.
    if (ingestErrors++ < 5) console.error("prism: could not show a Signal:", e, sig);
  }
}

function onBatch(signals, dropped) {
  state.dropped += dropped;
  if (state.paused) {
    for (const s of signals) state.held.push(s);
    const over = state.held.length - CAPACITY;
    if (over > 0) { state.held.splice(0, over); state.heldDropped += over; state.dropped += over; }
    return;
  }
  for (const s of signals) safeIngest(s);
  state.rateWindow.push([performance.now(), signals.length]);
}

function onHello(hello) {
  state.namespace = hello.namespace;
  links.trace = hello.trace_url || null;
  document.getElementById("ns").textContent = hello.namespace;
  document.getElementById("bus").textContent = hello.bus;
  document.title = `Prism · ${hello.namespace}`;
  if (!brain) brain = new BrainView(document.getElementById("brain"), document.getElementById("node-card"), roster, hello.namespace);
}

function onState(s, why) {
  const box = document.getElementById("status");
  box.className = "status " + (s === "live" ? "live" : s === "connecting" ? "" : "down");
  box.querySelector(".label").textContent = s === "live" ? "live" : s === "connecting" ? "connecting…" : why || s;
  document.body.dataset.channel = s;
}

// --- controls ---------------------------------------------------------------
function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.id === "tab-" + name);
  signalsView.dirty = true;
  tracesView.listVersion = -1;
  tracesView.detailVersion = -1;
  if (name === "metrics") metricsView.render(Math.floor(Date.now() / 1000), true);
}
document.getElementById("tabs").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-tab]");
  if (b) showTab(b.dataset.tab);
});

const pauseBtn = document.getElementById("pause");
pauseBtn.addEventListener("click", () => {
  state.paused = !state.paused;
  pauseBtn.textContent = state.paused ? "Resume" : "Pause";
  pauseBtn.classList.toggle("on", state.paused);
  if (!state.paused) {
    const held = state.held;
    state.held = [];
    for (const s of held) safeIngest(s);
  }
  header();
});

function currentRecords() {
  if (state.tab === "signals") return [...signalsView.records()];
  if (state.tab === "traces" && tracesView.selected) {
    const tr = traces.map.get(tracesView.selected);
    return tr ? tracesView.records(tr) : [];
  }
  return [...ring.iter()];
}

document.getElementById("export").addEventListener("click", () => {
  const lines = currentRecords().map((r) => JSON.stringify(r.sig));
  const blob = new Blob([lines.join("\n") + (lines.length ? "\n" : "")], { type: "application/x-ndjson" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `prism-${state.namespace}-${state.tab}-${Date.now()}.jsonl` });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
});

// --- live stream (Brain tab) ------------------------------------------------------
const liveBox = document.getElementById("live");
const openLive = new Set();
liveBox.addEventListener("click", (e) => {
  const item = e.target.closest(".live-item");
  if (!item || e.target.closest(".json")) return;
  const seq = Number(item.dataset.seq);
  if (openLive.has(seq)) openLive.delete(seq); else openLive.add(seq);
  liveDirty = true;
  renderLive(true);
});

function renderLive(force = false) {
  if (!liveDirty && !force) return;
  liveDirty = false;
  const recs = live.slice(-LIVE_ROWS).reverse();
  liveBox.replaceChildren(...recs.map((r) => el("div", { class: "live-item", dataset: { seq: String(r.seq) } },
    el("div", { class: "line" }, el("span", { class: "faint mono" }, clock(r.t).slice(0, 8)), badge(r.type), el("span", { class: "who" }, r.neuron || ""), el("span", { class: "sum" }, summary(r.sig))),
    openLive.has(r.seq) ? jsonTree(r.sig) : null)));
  document.getElementById("live-count").textContent = `(last ${recs.length})`;
}
const renderLiveThrottled = every(200, () => renderLive());

// --- the loop ---------------------------------------------------------------------
const renderListThrottled = every(500, () => tracesView.renderList());
const renderDetailThrottled = every(250, () => tracesView.renderDetail());
let lastSecond = 0;

function header() {
  const now = performance.now();
  state.rateWindow = state.rateWindow.filter(([t]) => now - t < 1000);
  const rate = state.rateWindow.reduce((n, [, c]) => n + c, 0);
  document.getElementById("rate").textContent = fmt(rate);
  document.getElementById("total").textContent = fmt(state.total);
  document.getElementById("dropped").textContent = fmt(state.dropped);
  document.getElementById("dropped-box").classList.toggle("hidden", !state.dropped);
  document.getElementById("held").textContent = state.paused ? `paused — ${fmt(state.held.length)} Signals held` : "";
}

function frame(now) {
  if (!state.paused) {
    if (state.tab === "brain") {
      if (brain) brain.draw(now);
      renderLiveThrottled();
    } else if (state.tab === "signals") signalsView.render();
    else if (state.tab === "traces") { renderListThrottled(); renderDetailThrottled(); }
  }
  const sec = Math.floor(Date.now() / 1000);
  if (sec !== lastSecond) {
    lastSecond = sec;
    header();
    if (!state.paused) metricsView.render(sec, state.tab === "metrics");
    metrics.expire();
    roster.sweep();
  }
  requestAnimationFrame(frame);
}

// For tests and the benchmark: read-only counters of what the page holds.
window.prism = {
  stats: () => ({ total: state.total, ring: ring.size, capacity: CAPACITY, traces: traces.map.size, dropped: state.dropped, held: state.held.length, paused: state.paused, neurons: roster.nodes.size }),
};

new Channel({ onHello, onBatch, onState }).open();
requestAnimationFrame(frame);
export { inspect };
