// Small helpers shared by every view. Nothing here touches innerHTML: Signal content is
// untrusted (any peer on the bus writes it), so text always goes in through textContent.

export const TYPE_COLORS = {
  TASK: "#58a6ff", AGENT_OUTPUT: "#3fb950", FINAL: "#2dd4bf", ERROR: "#f85149",
  THOUGHT_DELTA: "#bc8cff", TOOL_CALL: "#f0883e", TOOL_RESULT: "#e3b341", PLAN: "#79c0ff",
  CLARIFICATION: "#f778ba", PERMISSION: "#f778ba", CLARIFICATION_ANSWER: "#db61a2", PERMISSION_DECISION: "#db61a2",
  ESCALATION: "#ff9bce", STOP: "#ff7b72", STOPPED: "#ffa198",
  TASK_OFFER: "#a5d6ff", BID: "#a5d6ff", TASK_AWARDED: "#56d4dd", TASK_DECLINED: "#6e7681",
  REGISTER: "#39c5cf", HEARTBEAT: "#2f6f73", DEREGISTER: "#6e7681", DISCOVER: "#39c5cf",
  RECALL: "#d2a8ff", RECALLED: "#d2a8ff", IMPRINT: "#a371f7", IMPRINTED: "#a371f7",
  MEMORY_APPEND: "#a371f7", AUDIT: "#8b949e", CRITIQUE: "#ffa657", CONSENSUS: "#7ee787", CONTEXT_SYNC: "#8b949e",
};
export const ALL_TYPES = Object.keys(TYPE_COLORS);
export const MANAGEMENT = new Set(["REGISTER", "HEARTBEAT", "DEREGISTER", "DISCOVER"]);
export const WAIT_TYPES = new Set(["AGENT_OUTPUT", "CLARIFICATION", "PERMISSION", "ERROR", "FINAL"]);
export const color = (type) => TYPE_COLORS[type] || "#8b949e";

/** el("div", {class: "x", onclick: fn}, "text", child) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function badge(type) {
  const b = el("span", { class: "badge" }, type);
  b.style.setProperty("--c", color(type));
  return b;
}

const TS = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$/;

/** Milliseconds since the epoch (fractional) of a Signal's ts; NaN when unreadable. */
export function parseTs(ts) {
  if (typeof ts === "number") return ts * 1000;
  if (typeof ts !== "string") return NaN;
  const m = TS.exec(ts.replace(" ", "T"));
  if (!m) return Date.parse(ts);
  const frac = m[2] || "";
  const base = Date.parse(m[1] + (m[3] || "Z"));
  return base + (frac ? Number("0." + frac) * 1000 : 0);
}

export function clock(ms) {
  if (!Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}`;
}

export function dur(ms) {
  if (!Number.isFinite(ms)) return "—";
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60000)} m ${((ms % 60000) / 1000).toFixed(0)} s`;
}

export const fmt = (n) => n.toLocaleString("en-US");

/** The tool a TOOL_CALL / TOOL_RESULT names: `tool_name` when present, else `tool`. */
export function toolName(p) {
  return (p && (p.tool_name || p.tool)) || "?";
}

/** One line saying what a Signal carries, for lists and trees. */
export function summary(sig) {
  const p = sig.payload || {};
  try {
    switch (sig.type) {
      case "TASK": return short(p.input !== undefined ? p.input : p) + (p.capabilities ? `  caps=${p.capabilities.join(",")}` : "");
      case "AGENT_OUTPUT": return short(p.output !== undefined ? p.output : p);
      case "FINAL": return short(p.result !== undefined ? p.result : p);
      case "ERROR": return `${p.code || "ERROR"}: ${p.message || ""}`;
      case "THOUGHT_DELTA": return JSON.stringify(p.delta ?? "");
      case "TOOL_CALL": return `${toolName(p)}(${short(p.args ?? {})})`;
      case "TOOL_RESULT": return `${toolName(p)} → ${p.error ? "error: " + p.error : short(p.result)}`;
      case "CLARIFICATION": return `? ${p.question || ""}`;
      case "PERMISSION": return `may I ${p.action || ""}?`;
      case "CLARIFICATION_ANSWER": return `= ${short(p.answer)}`;
      case "PERMISSION_DECISION": return p.granted ? "granted" : `denied${p.reason ? ": " + p.reason : ""}`;
      case "STOP": return `${p.rollback ? "rollback " : ""}${p.reason || ""}`;
      case "STOPPED": return `cancelled=${p.cancelled ?? 0} compensated=${p.compensated ?? 0}${p.rolled_back ? " rolled back" : ""}`;
      case "REGISTER": return `${p.role || "neuron"} [${(p.capabilities || []).join(", ")}]`;
      case "HEARTBEAT": return p.status || "";
      case "BID": return `cost=${p.cost}${p.confidence != null ? " conf=" + p.confidence : ""}`;
      default: return short(p);
    }
  } catch (e) {
    return "";
  }
}

export function short(v, n = 140) {
  let s;
  try { s = typeof v === "string" ? v : JSON.stringify(v); } catch (e) { s = String(v); }
  if (s === undefined) s = "";
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

/** Where OTel trace ids link to: Prism's --trace-url template (`{trace_id}` replaced), or null. */
export const links = { trace: null };

/** The OTel trace id, as a link to the tracing UI when Prism was given --trace-url. */
export function otelLink(id) {
  const t = links.trace;
  if (typeof t !== "string" || !/^https?:\/\//.test(t)) return el("b", { class: "otel" }, id);
  return el("a", { class: "otel", href: t.split("{trace_id}").join(id), target: "_blank", rel: "noopener noreferrer" }, id);
}

/** The OTel trace id in a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or null. */
export function otelTraceId(meta) {
  const tp = meta && meta.traceparent;
  if (typeof tp !== "string") return null;
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(tp.trim().toLowerCase());
  if (!m || /^0+$/.test(m[1])) return null;
  return m[1];
}

/** Throttle: call fn at most every `ms` (trailing call kept). */
export function every(ms, fn) {
  let last = 0, timer = null;
  return (...args) => {
    const now = performance.now();
    if (now - last >= ms) { last = now; fn(...args); }
    else if (!timer) timer = setTimeout(() => { timer = null; last = performance.now(); fn(...args); }, ms - (now - last));
  };
}
