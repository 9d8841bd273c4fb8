// The page's memory. Everything is bounded and says how:
//   Ring      — the last `capacity` Signals (oldest overwritten);
//   Traces    — at most MAX_TRACES workflow traces, least recently active forgotten first;
//               each keeps the ring positions of its Signals (capped) and its assembled thoughts;
//   Metrics   — 60 one-second buckets per type, TASKs waiting for a reply (capped), a latency
//               sample ring per neuron;
//   Roster    — the participants seen (REGISTER / HEARTBEAT / DEREGISTER and producers).
import { MANAGEMENT, WAIT_TYPES, otelTraceId, parseTs, toolName } from "./util.js";

export const MAX_TRACES = 2000;
const MAX_TRACE_SEQS = 4000;
const MAX_THOUGHT_CHARS = 64 * 1024;
const MAX_PENDING = 20000;
const PENDING_TTL_MS = 10 * 60 * 1000;
const LATENCY_SAMPLES = 1000;
const MAX_NEURONS = 1000; // latency rows kept
export const MAX_NODES = 300; // participants drawn; more are counted, not drawn

export class Record {
  constructor(seq, sig) {
    this.seq = seq;
    this.sig = sig;
    this.type = sig.type;
    this.t = parseTs(sig.ts);
    this.neuron = (sig.directed && sig.directed.id) || "";
    this.trace = sig.trace_id || "";
    this._text = null;
  }
  /** Lower-case JSON of the Signal, built on first use (free-text filter). */
  text() {
    if (this._text === null) this._text = JSON.stringify(this.sig).toLowerCase();
    return this._text;
  }
}

export class Ring {
  constructor(capacity) {
    this.capacity = capacity;
    this.items = new Array(capacity);
    this.next = 0; // seq of the next Record
  }
  push(sig) {
    const rec = new Record(this.next, sig);
    this.items[this.next % this.capacity] = rec;
    this.next += 1;
    return rec;
  }
  get first() { return Math.max(0, this.next - this.capacity); }
  get size() { return this.next - this.first; }
  get(seq) {
    if (seq < this.first || seq >= this.next) return undefined;
    return this.items[seq % this.capacity];
  }
  *iter(from = this.first) {
    for (let s = Math.max(from, this.first); s < this.next; s++) yield this.items[s % this.capacity];
  }
}

class Trace {
  constructor(id, t) {
    this.id = id;
    this.first = t;
    this.last = t;
    this.count = 0;
    this.seqs = [];
    this.truncated = 0;
    this.neurons = new Set();
    this.types = new Map();
    this.state = "events"; // "running" once a TASK or an offer is seen
    this.errors = 0;
    this.stopped = false;
    this.rolledBack = false;
    this.otel = null;
    this.root = null; // the first TASK's summary facts
    this.thoughts = new Map(); // stream key -> {neuron, parent, text, count, first, last, seqs}
    this.search = id.toLowerCase();
  }
}

export class Traces {
  constructor() { this.map = new Map(); this.version = 0; this.evicted = 0; }

  add(rec) {
    if (MANAGEMENT.has(rec.type) || !rec.trace) return null;
    let tr = this.map.get(rec.trace);
    if (tr) this.map.delete(rec.trace); // re-insert: Map order = least recently active first
    else {
      tr = new Trace(rec.trace, rec.t);
      if (this.map.size >= MAX_TRACES) {
        this.map.delete(this.map.keys().next().value);
        this.evicted += 1;
      }
    }
    this.map.set(rec.trace, tr);
    this.version += 1;
    const sig = rec.sig, p = sig.payload || {};
    tr.count += 1;
    if (Number.isFinite(rec.t)) {
      if (!(rec.t >= tr.first)) tr.first = rec.t;
      if (!(rec.t <= tr.last)) tr.last = rec.t;
    }
    if (tr.seqs.length < MAX_TRACE_SEQS) tr.seqs.push(rec.seq); else tr.truncated += 1;
    tr.types.set(rec.type, (tr.types.get(rec.type) || 0) + 1);
    if (rec.neuron && !tr.neurons.has(rec.neuron)) {
      tr.neurons.add(rec.neuron);
      tr.search += " " + rec.neuron.toLowerCase();
    }
    if (!tr.otel) tr.otel = otelTraceId(sig.meta);
    switch (rec.type) {
      case "TASK":
        if (!tr.root) tr.root = { neuron: rec.neuron || (p.capabilities ? "caps:" + p.capabilities.join(",") : "open call") };
        if (tr.state !== "error" && tr.state !== "stopped") tr.state = "running";
        break;
      case "TASK_OFFER":
        if (tr.state === "events") tr.state = "running";
        if (!tr.root) tr.root = { neuron: "offer" + (p.capabilities ? " caps:" + p.capabilities.join(",") : "") };
        break;
      case "FINAL": if (tr.state !== "stopped") tr.state = "done"; break;
      case "AGENT_OUTPUT": if (tr.state === "running" || tr.state === "waiting") tr.state = "done"; break;
      case "ERROR": tr.errors += 1; if (tr.state !== "stopped") tr.state = "error"; break;
      case "CLARIFICATION": case "PERMISSION": if (tr.state === "running") tr.state = "waiting"; break;
      case "STOP": tr.stopped = true; tr.state = "stopped"; if (p.rollback) tr.rolledBack = true; break;
      case "STOPPED": tr.stopped = true; tr.state = "stopped"; if (p.rolled_back || p.compensated > 0) tr.rolledBack = true; break;
      case "THOUGHT_DELTA": {
        const key = (rec.neuron || "?") + "|" + (sig.parent_id || "");
        let st = tr.thoughts.get(key);
        if (!st) { st = { neuron: rec.neuron, parent: sig.parent_id, parts: [], text: "", count: 0, first: rec.t, last: rec.t, seqs: [] }; tr.thoughts.set(key, st); }
        const delta = typeof p.delta === "string" ? p.delta : "";
        st.count += 1;
        st.last = rec.t;
        if (st.seqs.length < MAX_TRACE_SEQS) st.seqs.push(rec.seq);
        if ((st.size || 0) < MAX_THOUGHT_CHARS) {
          if (Number.isInteger(p.seq)) { st.parts.push([p.seq, delta]); st.ordered = true; }
          else st.parts.push([st.count, delta]);
          st.text = null; // rebuilt on read
          st.size = (st.size || 0) + delta.length;
        }
        break;
      }
      default: break;
    }
    return tr;
  }

  /** Assembled text of a thought stream (deltas ordered by `seq` when they carry one). */
  static thoughtText(st) {
    if (st.text === null) {
      const parts = st.ordered ? [...st.parts].sort((a, b) => a[0] - b[0]) : st.parts;
      st.text = parts.map((x) => x[1]).join("");
    }
    return st.text;
  }

  /** Most recently active first. */
  list() { return [...this.map.values()].reverse(); }
}

export class Metrics {
  constructor() {
    this.buckets = []; // [{sec, counts: Map(type -> n), total}]
    this.totals = new Map();
    this.errors = 0;
    this.recentErrors = [];
    this.pending = new Map(); // TASK id -> {t, neuron}
    this.latency = new Map(); // neuron -> {samples: [], i, replies, errors}
  }
  bucket(sec) {
    const b = this.buckets[this.buckets.length - 1];
    if (b && b.sec === sec) return b;
    const nb = { sec, counts: new Map(), total: 0 };
    this.buckets.push(nb);
    while (this.buckets.length > 61) this.buckets.shift();
    return nb;
  }
  add(rec, nowSec) {
    const b = this.bucket(nowSec);
    b.counts.set(rec.type, (b.counts.get(rec.type) || 0) + 1);
    b.total += 1;
    this.totals.set(rec.type, (this.totals.get(rec.type) || 0) + 1);
    const sig = rec.sig;
    if (rec.type === "TASK") {
      if (this.pending.size >= MAX_PENDING) this.pending.delete(this.pending.keys().next().value);
      this.pending.set(sig.id, { t: rec.t, neuron: rec.neuron, seen: performance.now() });
    } else if (WAIT_TYPES.has(rec.type) && sig.parent_id && this.pending.has(sig.parent_id)) {
      const task = this.pending.get(sig.parent_id);
      this.pending.delete(sig.parent_id);
      const who = rec.neuron || task.neuron || "?";
      let l = this.latency.get(who);
      if (!l) {
        if (this.latency.size >= MAX_NEURONS) return;
        l = { samples: [], i: 0, replies: 0, errors: 0 };
        this.latency.set(who, l);
      }
      const ms = rec.t - task.t;
      if (Number.isFinite(ms)) {
        if (l.samples.length < LATENCY_SAMPLES) l.samples.push(ms); else l.samples[l.i++ % LATENCY_SAMPLES] = ms;
      }
      l.replies += 1;
      if (rec.type === "ERROR") l.errors += 1;
    }
    if (rec.type === "ERROR") {
      this.errors += 1;
      this.recentErrors.push(rec);
      if (this.recentErrors.length > 50) this.recentErrors.shift();
    }
  }
  expire() {
    const cutoff = performance.now() - PENDING_TTL_MS;
    for (const [id, p] of this.pending) {
      if (p.seen >= cutoff) break;
      this.pending.delete(id);
    }
  }
  inFlightBy(neuron) {
    let n = 0;
    for (const p of this.pending.values()) if (p.neuron === neuron) n += 1;
    return n;
  }
  lastSecond(nowSec) {
    for (let i = this.buckets.length - 1; i >= 0; i--) {
      if (this.buckets[i].sec === nowSec - 1) return this.buckets[i];
    }
    return null;
  }
}

export function percentile(samples, q) {
  if (!samples.length) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
}

// Which way a Signal travels between the synapse and the participant in `directed.id`.
const INBOUND = new Set(["TASK", "TASK_AWARDED", "TASK_DECLINED", "RECALL", "IMPRINT", "DISCOVER", "STOP",
  "CLARIFICATION_ANSWER", "PERMISSION_DECISION"]);

export class Roster {
  constructor() { this.nodes = new Map(); this.version = 0; this.overflow = 0; }
  node(id, role) {
    let n = this.nodes.get(id);
    if (!n && this.nodes.size >= MAX_NODES) { this.overflow += 1; return null; }
    if (!n) {
      n = { id, role: role || "peer", caps: [], status: "seen", lastSeen: 0, count: 0, activity: 0, registered: false, version: null, gone: 0 };
      this.nodes.set(id, n);
      this.version += 1;
    }
    return n;
  }
  /** Update presence; returns [nodeId | null, "in" | "out"] for the animation. */
  add(rec) {
    const sig = rec.sig, p = sig.payload || {}, id = rec.neuron;
    const now = performance.now();
    if (rec.type === "REGISTER" && id) {
      const n = this.node(id, p.role || (p.engram ? "engram" : "neuron"));
      if (!n) return [null, "in"];
      n.role = p.role || (p.engram ? "engram" : "neuron");
      n.caps = Array.isArray(p.capabilities) ? p.capabilities : (sig.directed.capabilities || []);
      n.version = p.version || null;
      n.registered = true;
      if (n.status !== "live") this.version += 1;
      n.status = "live"; n.gone = 0;
    } else if (rec.type === "HEARTBEAT" && id) {
      const n = this.node(id, "neuron");
      if (!n) return [null, "in"];
      if (n.status !== "live") this.version += 1;
      n.status = "live"; n.gone = 0; n.beat = now;
    } else if (rec.type === "DEREGISTER" && id) {
      const n = this.node(id, "neuron");
      if (!n) return [null, "in"];
      n.status = "gone"; n.gone = now;
      this.version += 1;
    } else if (id && rec.type !== "TOOL_CALL") {
      this.node(id);
    }
    const node = id ? this.nodes.get(id) : undefined;
    if (!node) return [null, "in"];
    node.lastSeen = now;
    node.count += 1;
    node.activity = Math.min(1, node.activity + 0.35);
    return [id, INBOUND.has(rec.type) ? "in" : "out"];
  }
  /** Forget participants deregistered more than `ms` ago. */
  sweep(ms = 30000) {
    const cutoff = performance.now() - ms;
    for (const [id, n] of this.nodes) {
      if (n.status === "gone" && n.gone < cutoff) { this.nodes.delete(id); this.version += 1; }
    }
  }
  live() { let k = 0; for (const n of this.nodes.values()) if (n.status === "live") k += 1; return k; }
  /** Neurons whose capabilities cover `caps` (for routed TASKs and offers). */
  covering(caps) {
    const out = [];
    for (const n of this.nodes.values()) {
      if (n.status === "gone" || !n.registered) continue;
      if (!caps || !caps.length || caps.every((c) => n.caps.includes(c))) out.push(n.id);
    }
    return out;
  }
}

export { toolName };
