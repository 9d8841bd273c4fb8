// Metrics: Signals/s by type (stacked over the last 60 s), in-flight TASKs, errors and
// TASK → reply latency per neuron. Recomputed once a second, not per Signal.
import { percentile } from "./store.js";
import { badge, clock, color, dur, el, fmt, summary } from "./util.js";

export class MetricsView {
  constructor(metrics, roster, traces, hooks) {
    this.m = metrics;
    this.roster = roster;
    this.traces = traces;
    this.hooks = hooks;
    this.canvas = document.getElementById("rate-chart");
  }

  render(nowSec, visible) {
    const m = this.m;
    const last = m.lastSecond(nowSec);
    document.getElementById("m-rate").textContent = fmt(last ? last.total : 0);
    document.getElementById("m-inflight").textContent = fmt(m.pending.size);
    document.getElementById("m-traces").textContent = fmt(this.traces.map.size);
    document.getElementById("m-errors").textContent = fmt(m.errors);
    document.getElementById("m-neurons").textContent = fmt(this.roster.live());
    if (!visible) return;
    this.chart(nowSec);
    const rows = [...m.totals.entries()].sort((a, b) => b[1] - a[1]).map(([t, n]) =>
      el("tr", {}, el("td", {}, badge(t)), el("td", {}, fmt(last ? last.counts.get(t) || 0 : 0)), el("td", {}, fmt(n))));
    document.querySelector("#by-type tbody").replaceChildren(...rows);
    const lat = [...m.latency.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([who, l]) =>
      el("tr", {}, el("td", {}, who), el("td", {}, fmt(l.replies)), el("td", {}, dur(percentile(l.samples, 0.5))),
        el("td", {}, dur(percentile(l.samples, 0.95))), el("td", {}, fmt(m.inFlightBy(who))), el("td", {}, fmt(l.errors))));
    document.querySelector("#latency tbody").replaceChildren(...lat);
    const errs = m.recentErrors.slice(-12).reverse().map((r) =>
      el("div", { class: "err", onclick: () => this.hooks.openTrace(r.trace) },
        el("div", {}, el("span", { class: "mono" }, clock(r.t)), "  ", el("b", {}, r.neuron || "?"), "  ", el("span", { class: "mono dim" }, r.trace)),
        el("div", { class: "mono" }, summary(r.sig))));
    document.getElementById("errors").replaceChildren(...(errs.length ? errs : [el("div", { class: "faint" }, "No errors.")]));
  }

  chart(nowSec) {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const secs = [];
    for (let s = nowSec - 60; s < nowSec; s++) secs.push(s);
    const by = new Map(this.m.buckets.map((b) => [b.sec, b]));
    const types = [...this.m.totals.keys()];
    let max = 1;
    for (const s of secs) { const b = by.get(s); if (b) max = Math.max(max, b.total); }
    const bw = w / secs.length;
    secs.forEach((s, i) => {
      const b = by.get(s);
      if (!b) return;
      let y = h - 16;
      for (const t of types) {
        const n = b.counts.get(t) || 0;
        if (!n) continue;
        const bh = (n / max) * (h - 28);
        ctx.fillStyle = color(t);
        ctx.fillRect(i * bw + 1, y - bh, Math.max(1, bw - 2), bh);
        y -= bh;
      }
    });
    ctx.fillStyle = "#5b6576"; ctx.font = "10.5px ui-monospace, monospace"; ctx.textAlign = "left";
    ctx.fillText(`${fmt(max)}/s`, 4, 11);
    ctx.fillText("-60 s", 4, h - 3);
    ctx.textAlign = "right"; ctx.fillText("now", w - 4, h - 3);
    const legend = document.getElementById("rate-legend");
    if (legend.childElementCount !== types.length) legend.replaceChildren(...types.map((t) => badge(t)));
  }
}
