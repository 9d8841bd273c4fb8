// Trace view: the list of workflow traces (most recently active first) and, for the one
// picked, its Signals as a timeline with durations and as a tree by parent_id, with the
// THOUGHT_DELTA streams assembled into text and STOP / rollbacks marked.
import { jsonTree } from "./json.js";
import { inspect } from "./signals.js";
import { Traces } from "./store.js";
import { WAIT_TYPES, badge, clock, color, dur, el, fmt, otelLink, summary, toolName } from "./util.js";

const LIST_MAX = 200;
const MAX_LANES = 80;
const MAX_TREE_NODES = 1500;

export class TracesView {
  constructor(ring, traces, hooks) {
    this.ring = ring;
    this.traces = traces;
    this.hooks = hooks;
    this.list = document.getElementById("trace-list");
    this.detail = document.getElementById("trace-detail");
    this.search = "";
    this.selected = null;
    this.listVersion = -1;
    this.detailVersion = -1;
    this.selectedSignal = null;
    document.getElementById("trace-search").addEventListener("input", (e) => { this.search = e.target.value.trim().toLowerCase(); this.listVersion = -1; });
    this.list.addEventListener("click", (e) => {
      const item = e.target.closest(".trace-item");
      if (item) this.open(item.dataset.trace);
    });
  }

  open(id) {
    this.selected = id;
    this.selectedSignal = null;
    this.listVersion = -1;
    this.detailVersion = -1;
  }

  renderList() {
    if (this.listVersion === this.traces.version) return;
    this.listVersion = this.traces.version;
    const items = [];
    for (const tr of this.traces.list()) {
      if (this.search && !tr.search.includes(this.search) && ![...tr.types.keys()].some((t) => t.toLowerCase() === this.search)) continue;
      items.push(this.item(tr));
      if (items.length >= LIST_MAX) break;
    }
    if (!items.length) items.push(el("div", { class: "empty" }, this.traces.map.size ? "No trace matches." : "No workflow traces yet."));
    this.list.replaceChildren(...items);
  }

  item(tr) {
    return el("div", { class: "trace-item" + (tr.id === this.selected ? " selected" : ""), dataset: { trace: tr.id } },
      el("div", { class: "top" }, el("span", { class: `state ${tr.state}` }, tr.state), el("span", { class: "id" }, tr.id),
        tr.rolledBack ? el("span", { class: "flag" }, "rollback") : null),
      el("div", { class: "meta" },
        el("span", {}, tr.root ? "→ " + tr.root.neuron : [...tr.neurons].slice(0, 2).join(", ") || "—"),
        el("span", {}, `${fmt(tr.count)} sig`),
        el("span", {}, dur(tr.last - tr.first)),
        el("span", {}, clock(tr.last))),
    );
  }

  records(tr) {
    const out = [];
    for (const seq of tr.seqs) { const r = this.ring.get(seq); if (r) out.push(r); }
    return out;
  }

  renderDetail(force = false) {
    const tr = this.selected && this.traces.map.get(this.selected);
    if (!tr) {
      if (this.selected && this.detailVersion !== -2) {
        this.detail.replaceChildren(el("div", { class: "empty" }, "This trace is no longer in the page's buffer."));
        this.detailVersion = -2;
      }
      return;
    }
    const v = tr.count;
    if (!force && v === this.detailVersion) return;
    this.detailVersion = v;
    const recs = this.records(tr);
    const missing = tr.count - recs.length;
    this.detail.replaceChildren(
      this.head(tr, missing),
      this.timeline(tr, recs),
      el("div", { class: "cols" },
        el("div", { class: "section" }, el("h3", {}, "Signal tree (by parent_id)"), this.tree(tr, recs)),
        el("div", {},
          tr.thoughts.size ? el("div", { class: "section" }, el("h3", {}, "Thoughts (THOUGHT_DELTA, assembled)"), ...this.thoughts(tr)) : null,
          el("div", { class: "section", id: "trace-inspector" }, el("h3", {}, "Signal"), this.selectedSignal ? null : el("div", { class: "faint" }, "Click a node or a bar.")),
        ),
      ),
    );
    if (this.selectedSignal) {
      const rec = this.ring.get(this.selectedSignal);
      if (rec) inspect(this.detail.querySelector("#trace-inspector"), rec, this.hooks);
    }
  }

  pick(seq) {
    this.selectedSignal = seq;
    const rec = this.ring.get(seq);
    const box = this.detail.querySelector("#trace-inspector");
    if (rec && box) inspect(box, rec, this.hooks);
    for (const n of this.detail.querySelectorAll(".tnode.sel")) n.classList.remove("sel");
    for (const n of this.detail.querySelectorAll(`.tnode[data-seq="${seq}"]`)) n.classList.add("sel");
  }

  head(tr, missing) {
    return el("div", { class: "trace-head" },
      el("span", { class: "tid" }, tr.id),
      el("span", { class: `state ${tr.state}` }, tr.state),
      tr.rolledBack ? el("span", { class: "flag" }, "rolled back") : null,
      el("span", { class: "kv" }, "duration ", el("b", {}, dur(tr.last - tr.first))),
      el("span", { class: "kv" }, "signals ", el("b", {}, fmt(tr.count))),
      el("span", { class: "kv" }, "neurons ", el("b", {}, [...tr.neurons].join(", ") || "—")),
      tr.otel ? el("span", { class: "kv" }, "OTel trace ", otelLink(tr.otel)) : null,
      missing > 0 ? el("span", { class: "faint" }, `${fmt(missing)} older Signals left the buffer`) : null,
      el("span", { class: "link", onclick: () => this.hooks.filterTrace(tr.id) }, "show in list"),
    );
  }

  lanes(tr, recs) {
    const byParent = new Map();
    for (const r of recs) {
      const p = r.sig.parent_id;
      if (p) { if (!byParent.has(p)) byParent.set(p, []); byParent.get(p).push(r); }
    }
    const lanes = [];
    const points = [];
    const marks = [];
    for (const r of recs) {
      const s = r.sig, p = s.payload || {};
      const kids = byParent.get(s.id) || [];
      switch (r.type) {
        case "TASK": {
          const reply = kids.find((k) => WAIT_TYPES.has(k.type));
          lanes.push({ label: `TASK → ${r.neuron || (p.capabilities ? "caps " + p.capabilities.join(",") : "open call")}`, type: "TASK", from: r.t, to: reply ? reply.t : null, rec: r, end: reply });
          break;
        }
        case "TOOL_CALL": {
          const res = kids.find((k) => k.type === "TOOL_RESULT") || recs.find((k) => k.type === "TOOL_RESULT" && p.call_id && k.sig.payload && k.sig.payload.call_id === p.call_id);
          lanes.push({ label: `tool ${toolName(p)}`, type: "TOOL_CALL", from: r.t, to: res ? res.t : null, rec: r, end: res });
          break;
        }
        case "TASK_OFFER": {
          const award = recs.find((k) => k.type === "TASK_AWARDED");
          lanes.push({ label: "offer → award", type: "TASK_OFFER", from: r.t, to: award ? award.t : null, rec: r, end: award });
          break;
        }
        case "CLARIFICATION": case "PERMISSION": {
          const ans = kids[0];
          lanes.push({ label: `${r.type.toLowerCase()} from ${r.neuron || "?"}`, type: r.type, from: r.t, to: ans ? ans.t : null, rec: r, end: ans });
          break;
        }
        case "STOP": marks.push({ t: r.t, label: p.rollback ? "STOP · rollback" : "STOP", rec: r }); break;
        case "STOPPED": marks.push({ t: r.t, label: p.rolled_back ? "STOPPED · rolled back" : "STOPPED", rec: r }); break;
        case "THOUGHT_DELTA": case "TOOL_RESULT": break;
        default: points.push(r);
      }
    }
    for (const st of tr.thoughts.values()) {
      lanes.push({ label: `thinking · ${st.neuron || "?"} (${st.count})`, type: "THOUGHT_DELTA", from: st.first, to: st.last, rec: this.ring.get(st.seqs[0]) });
    }
    lanes.sort((a, b) => a.from - b.from);
    return { lanes, points, marks };
  }

  timeline(tr, recs) {
    const { lanes, points, marks } = this.lanes(tr, recs);
    const t0 = tr.first, span = Math.max(0.001, tr.last - tr.first);
    const pos = (t) => `${Math.max(0, Math.min(100, ((t - t0) / span) * 100))}%`;
    const box = el("div", { class: "timeline" });
    const shown = lanes.slice(0, MAX_LANES);
    for (const lane of shown) {
      const track = el("div", { class: "track" });
      const to = lane.to ?? tr.last;
      const late = (to - t0) / span > 0.8;
      const bar = el("div", { class: late ? "bar late" : "bar", title: `${lane.label}: ${lane.to == null ? "no reply yet" : dur(to - lane.from)}` });
      bar.style.setProperty("--c", color(lane.type));
      bar.style.left = pos(lane.from);
      bar.style.width = `calc(${pos(to)} - ${pos(lane.from)})`;
      if (lane.to == null) bar.style.backgroundImage = "repeating-linear-gradient(45deg, transparent 0 4px, rgba(0,0,0,.35) 4px 8px)";
      bar.append(el("span", { class: "dur" }, lane.to == null ? "…" : dur(to - lane.from)));
      if (lane.rec) bar.addEventListener("click", () => this.pick(lane.rec.seq));
      track.append(bar);
      box.append(el("div", { class: "lane" }, el("div", { class: "lbl", title: lane.label }, lane.label), track));
    }
    if (lanes.length > shown.length) box.append(el("div", { class: "faint" }, `… ${lanes.length - shown.length} more spans`));
    if (points.length) {
      const track = el("div", { class: "track" });
      for (const r of points.slice(0, 400)) {
        const pt = el("div", { class: "pt", title: `${r.type} ${r.neuron || ""} +${dur(r.t - t0)}` });
        pt.style.setProperty("--c", color(r.type));
        pt.style.left = pos(r.t);
        pt.addEventListener("click", () => this.pick(r.seq));
        track.append(pt);
      }
      box.append(el("div", { class: "lane" }, el("div", { class: "lbl" }, "replies & events"), track));
    }
    marks.forEach((m, i) => {
      const mk = el("div", { class: "vmark" }, el("span", { style: `top: ${-2 + 12 * (i % 3)}px` }, m.label));
      mk.style.left = `calc(210px + 10px + (100% - 230px) * ${(Math.max(0, m.t - t0) / span).toFixed(4)})`;
      box.append(mk);
    });
    box.append(el("div", { class: "axis" }, el("span", {}, clock(t0)), el("span", {}, `+${dur(span / 2)}`), el("span", {}, `+${dur(span)}`)));
    return box;
  }

  tree(tr, recs) {
    const ids = new Set(recs.map((r) => r.sig.id));
    const kids = new Map();
    const roots = [];
    const deltas = new Map(); // parent -> [records]
    for (const r of recs) {
      const parent = r.sig.parent_id;
      if (r.type === "THOUGHT_DELTA") {
        const key = (parent && ids.has(parent) ? parent : "") + "|" + (r.neuron || "");
        if (!deltas.has(key)) {
          deltas.set(key, []);
          const group = { group: key, rec: r };
          if (parent && ids.has(parent)) { if (!kids.has(parent)) kids.set(parent, []); kids.get(parent).push(group); }
          else roots.push(group);
        }
        deltas.get(key).push(r);
        continue;
      }
      const entry = { rec: r };
      if (parent && ids.has(parent)) { if (!kids.has(parent)) kids.set(parent, []); kids.get(parent).push(entry); }
      else roots.push(entry);
    }
    let budget = MAX_TREE_NODES;
    const t0 = tr.first;
    const render = (entries, depth) => {
      const ul = el("ul");
      for (const e of entries) {
        if (budget-- <= 0) { ul.append(el("li", { class: "faint" }, "… (tree truncated)")); break; }
        const r = e.rec;
        if (e.group) {
          const group = deltas.get(e.group);
          const text = group.map((x) => (typeof x.sig.payload.delta === "string" ? x.sig.payload.delta : "")).join("");
          ul.append(el("li", {}, el("div", { class: "tnode", dataset: { seq: String(r.seq) }, onclick: () => this.pick(r.seq) },
            badge("THOUGHT_DELTA"), el("span", { class: "who" }, r.neuron || ""), el("span", { class: "at" }, `×${group.length} +${dur(r.t - t0)}`),
            el("span", { class: "sum" }, JSON.stringify(text.length > 80 ? text.slice(0, 79) + "…" : text)))));
          continue;
        }
        const s = r.sig;
        const orphan = s.parent_id && !ids.has(s.parent_id);
        const flags = [];
        if (orphan && depth === 0) flags.push(el("span", { class: "flag", title: `parent ${s.parent_id} not seen` }, "↑ parent not seen"));
        if ((r.type === "STOP" && s.payload.rollback) || (r.type === "STOPPED" && s.payload.rolled_back)) flags.push(el("span", { class: "flag" }, "rollback"));
        const li = el("li", {}, el("div", { class: "tnode", dataset: { seq: String(r.seq) }, onclick: () => this.pick(r.seq) },
          badge(r.type), el("span", { class: "who" }, r.neuron || ""), el("span", { class: "at" }, `+${dur(r.t - t0)}`), ...flags,
          el("span", { class: "sum" }, summary(s))));
        const children = kids.get(s.id);
        if (children && depth < 60) li.append(render(children, depth + 1));
        ul.append(li);
      }
      return ul;
    };
    return el("div", { class: "tree" }, render(roots, 0));
  }

  thoughts(tr) {
    const out = [];
    for (const st of tr.thoughts.values()) {
      out.push(el("div", { class: "thought" },
        el("div", { class: "who" }, `${st.neuron || "?"} · ${st.count} deltas · ${dur(st.last - st.first)}`),
        Traces.thoughtText(st)));
    }
    return out;
  }
}

export { jsonTree };
