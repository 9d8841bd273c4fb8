// Signal list: filters (type, neuron, trace, free text), a virtual list that renders only
// the rows in view, and the inspector. The matching positions live in `matches` (ring seqs,
// oldest first); evicted ones are dropped from the front as the ring moves on.
import { jsonTree } from "./json.js";
import { ALL_TYPES, badge, clock, el, fmt, otelLink, otelTraceId, summary } from "./util.js";

const ROW = 24;

export class SignalsView {
  constructor(ring, hooks) {
    this.ring = ring;
    this.hooks = hooks; // {openTrace(traceId)}
    this.rows = document.getElementById("rows");
    this.spacer = document.getElementById("rows-spacer");
    this.count = document.getElementById("f-count");
    this.inspector = document.getElementById("inspector");
    this.f = { type: "", neuron: "", trace: "", text: "" };
    this.matches = [];
    this.start = 0; // matches[start..] are the live ones
    this.pool = [];
    this.selected = -1;
    this.dirty = true;
    this.follow = true;
    this.neurons = new Set();
    const typeSel = document.getElementById("f-type");
    for (const t of ALL_TYPES) typeSel.append(el("option", { value: t }, t));
    const bind = (id, key, ev = "input") => document.getElementById(id).addEventListener(ev, (e) => { this.f[key] = e.target.value.trim(); this.refilter(); });
    bind("f-type", "type", "change");
    bind("f-neuron", "neuron", "change");
    bind("f-trace", "trace");
    bind("f-text", "text");
    const follow = document.getElementById("f-follow");
    follow.addEventListener("change", () => { this.follow = follow.checked; this.dirty = true; });
    this.rows.addEventListener("scroll", () => {
      // Scrolling up stops following the tail; scrolling back to the end resumes it.
      const atEnd = this.rows.scrollTop + this.rows.clientHeight >= this.rows.scrollHeight - ROW;
      if (this.rows.clientHeight && atEnd !== this.follow) { this.follow = atEnd; follow.checked = atEnd; }
      this.dirty = true;
    });
    this.rows.addEventListener("click", (e) => {
      const row = e.target.closest(".row");
      if (row) this.select(Number(row.dataset.seq));
    });
    this.followBox = follow;
  }

  setFilter(patch) {
    Object.assign(this.f, patch);
    for (const [k, id] of [["type", "f-type"], ["neuron", "f-neuron"], ["trace", "f-trace"], ["text", "f-text"]]) {
      document.getElementById(id).value = this.f[k];
    }
    this.refilter();
  }

  test(rec) {
    const f = this.f;
    if (f.type && rec.type !== f.type) return false;
    if (f.neuron && rec.neuron !== f.neuron) return false;
    if (f.trace && !rec.trace.startsWith(f.trace)) return false;
    if (f.text && !rec.text().includes(f.text.toLowerCase())) return false;
    return true;
  }

  refilter() {
    this.matches = [];
    this.start = 0;
    for (const rec of this.ring.iter()) if (this.test(rec)) this.matches.push(rec.seq);
    this.dirty = true;
  }

  add(rec) {
    if (rec.neuron && !this.neurons.has(rec.neuron) && this.neurons.size < 1000) {
      this.neurons.add(rec.neuron);
      document.getElementById("f-neuron").append(el("option", { value: rec.neuron }, rec.neuron));
    }
    if (this.test(rec)) { this.matches.push(rec.seq); this.dirty = true; }
  }

  compact() {
    const first = this.ring.first;
    while (this.start < this.matches.length && this.matches[this.start] < first) this.start += 1;
    if (this.start > 4096 && this.start > this.matches.length / 2) {
      this.matches = this.matches.slice(this.start);
      this.start = 0;
    }
  }

  /** The records currently shown (for export). */
  *records() {
    this.compact();
    for (let i = this.start; i < this.matches.length; i++) {
      const r = this.ring.get(this.matches[i]);
      if (r) yield r;
    }
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    this.compact();
    const n = this.matches.length - this.start;
    this.count.textContent = `${fmt(n)} shown`;
    this.spacer.style.height = `${n * ROW}px`;
    if (this.follow) {
      const target = Math.max(0, n * ROW - this.rows.clientHeight);
      if (Math.abs(this.rows.scrollTop - target) > 1) this.rows.scrollTop = target;
    }
    const top = this.rows.scrollTop;
    const from = Math.max(0, Math.floor(top / ROW) - 5);
    const to = Math.min(n, Math.ceil((top + this.rows.clientHeight) / ROW) + 5);
    const need = to - from;
    while (this.pool.length < need) {
      const r = el("div", { class: "row" }, el("span", { class: "t" }), el("span"), el("span", { class: "n" }), el("span", { class: "tr" }), el("span", { class: "p" }));
      this.rows.append(r);
      this.pool.push(r);
    }
    for (let i = 0; i < this.pool.length; i++) {
      const row = this.pool[i];
      if (i >= need) { row.style.display = "none"; continue; }
      const rec = this.ring.get(this.matches[this.start + from + i]);
      if (!rec) { row.style.display = "none"; continue; }
      row.style.display = "";
      row.style.top = `${(from + i) * ROW}px`;
      if (row.dataset.seq !== String(rec.seq)) {
        row.dataset.seq = String(rec.seq);
        const [t, ty, nn, tr, p] = row.children;
        t.textContent = clock(rec.t);
        ty.replaceChildren(badge(rec.type));
        nn.textContent = rec.neuron || "—";
        tr.textContent = rec.trace;
        p.textContent = summary(rec.sig);
      }
      row.classList.toggle("sel", rec.seq === this.selected);
    }
  }

  select(seq) {
    this.selected = seq;
    this.dirty = true;
    const rec = this.ring.get(seq);
    if (rec) inspect(this.inspector, rec, this.hooks);
  }
}

/** Fill `box` with the details of one Signal. */
export function inspect(box, rec, hooks) {
  const s = rec.sig;
  const otel = otelTraceId(s.meta);
  const kv = (k, v) => [el("div", { class: "k" }, k), el("div", { class: "v" }, v)];
  const traceLink = el("span", { class: "link", onclick: () => hooks.openTrace(s.trace_id) }, s.trace_id);
  const filterTrace = el("span", { class: "link", onclick: () => hooks.filterTrace(s.trace_id) }, "list");
  box.replaceChildren(
    el("div", { class: "insp-head" }, badge(s.type), el("span", { class: "mono" }, s.id)),
    el("div", { class: "insp-grid" },
      ...kv("trace", el("span", {}, traceLink, "  ", filterTrace)),
      ...kv("parent", s.parent_id || "—"),
      ...kv("directed", s.directed ? JSON.stringify(s.directed) : "—"),
      ...kv("ts", String(s.ts)),
      ...(otel ? kv("otel trace", otelLink(otel)) : []),
      ...kv("v", String(s.v)),
    ),
    el("h3", {}, "payload"), jsonTree(s.payload || {}),
    el("h3", { style: "margin-top:12px" }, "meta"), jsonTree(s.meta || {}),
  );
}
