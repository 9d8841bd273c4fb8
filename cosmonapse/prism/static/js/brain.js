// Brain view: the synapse in the middle, the namespace's participants around it, a particle
// for each Signal travelling along its edge. Particles are capped and merged per edge and
// type, so a flood draws the same few hundred sprites per frame however fast it comes.
import { color, el, fmt } from "./util.js";

const MAX_PARTICLES = 400;
const MERGE_MS = 60; // one particle per (edge, type, direction) per this long
const FLIGHT_MS = 700;
const ROLE_COLORS = { neuron: "#7aa2f7", engram: "#a371f7", effector: "#f0883e", peer: "#6e7681" };

export class BrainView {
  constructor(canvas, card, roster, namespace) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.card = card;
    this.roster = roster;
    this.namespace = namespace;
    this.particles = [];
    this.lastSpawn = new Map();
    this.synapsePulse = 0;
    this.positions = new Map();
    this.layoutVersion = -1;
    this.hover = null;
    this.selected = null;
    this.size = [0, 0];
    canvas.addEventListener("mousemove", (e) => { this.hover = this.hit(e); canvas.style.cursor = this.hover ? "pointer" : "default"; });
    canvas.addEventListener("click", (e) => { this.selected = this.hit(e); this.showCard(); });
  }

  hit(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = e.clientX - r.left, y = e.clientY - r.top;
    for (const [id, p] of this.positions) if ((p.x - x) ** 2 + (p.y - y) ** 2 < 22 ** 2) return id;
    return null;
  }

  showCard() {
    const n = this.selected && this.roster.nodes.get(this.selected);
    this.card.classList.toggle("hidden", !n);
    if (!n) return;
    this.card.replaceChildren(
      el("div", { class: "title" }, n.id),
      el("div", { class: "row" }, el("span", {}, "role"), el("span", {}, n.role)),
      el("div", { class: "row" }, el("span", {}, "status"), el("span", {}, n.status)),
      el("div", { class: "row" }, el("span", {}, "signals"), el("span", {}, fmt(n.count))),
      n.version ? el("div", { class: "row" }, el("span", {}, "version"), el("span", {}, n.version)) : null,
      el("div", { class: "caps" }, ...n.caps.map((c) => el("span", { class: "cap" }, c))),
    );
  }

  /** A Signal went by: `id` is the participant (or null), `dir` "in" (to it) or "out". */
  signal(rec, id, dir, targets) {
    this.synapsePulse = Math.min(1, this.synapsePulse + 0.08);
    const ids = id ? [id] : targets || [];
    const now = performance.now();
    for (const nid of ids) {
      const key = nid + "|" + rec.type + "|" + dir;
      const last = this.lastSpawn.get(key) || 0;
      if (now - last < MERGE_MS) continue;
      this.lastSpawn.set(key, now);
      if (this.particles.length >= MAX_PARTICLES) this.particles.shift();
      this.particles.push({ id: nid, dir, type: rec.type, born: now });
    }
  }

  layout(w, h) {
    const nodes = [...this.roster.nodes.values()].sort((a, b) => (a.role + a.id).localeCompare(b.role + b.id));
    const cx = w / 2, cy = h / 2;
    const ring = Math.max(60, Math.min(w, h) * 0.36);
    this.positions.clear();
    const inner = nodes.length > 18 ? Math.ceil(nodes.length / 2) : nodes.length;
    nodes.forEach((n, i) => {
      const onInner = i < inner;
      const k = onInner ? i : i - inner;
      const count = onInner ? inner : nodes.length - inner;
      const r = onInner ? ring : ring * 0.62;
      const a = -Math.PI / 2 + (2 * Math.PI * k) / Math.max(1, count) + (onInner ? 0 : Math.PI / Math.max(1, count));
      this.positions.set(n.id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
    });
    this.layoutVersion = this.roster.version;
  }

  draw(now) {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      this.layoutVersion = -1;
    }
    if (this.layoutVersion !== this.roster.version || this.size[0] !== w || this.size[1] !== h) { this.layout(w, h); this.size = [w, h]; }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const cx = w / 2, cy = h / 2;

    // background rings
    ctx.strokeStyle = "rgba(122,162,247,0.06)";
    for (let r = 60; r < Math.max(w, h); r += 70) { ctx.beginPath(); ctx.arc(cx, cy, r, 0, Math.PI * 2); ctx.stroke(); }

    // edges
    for (const [id, p] of this.positions) {
      const n = this.roster.nodes.get(id);
      const a = n ? n.activity : 0;
      ctx.strokeStyle = n && n.status === "gone" ? "rgba(110,118,129,0.15)" : `rgba(122,162,247,${0.12 + a * 0.5})`;
      ctx.lineWidth = 1 + a * 2;
      ctx.beginPath(); ctx.moveTo(cx, cy); ctx.lineTo(p.x, p.y); ctx.stroke();
    }

    // particles
    const alive = [];
    for (const pt of this.particles) {
      const age = (now - pt.born) / FLIGHT_MS;
      if (age >= 1) continue;
      alive.push(pt);
      const p = this.positions.get(pt.id);
      if (!p) continue;
      const f = pt.dir === "in" ? age : 1 - age;
      const x = cx + (p.x - cx) * f, y = cy + (p.y - cy) * f;
      ctx.fillStyle = color(pt.type);
      ctx.shadowColor = color(pt.type); ctx.shadowBlur = 10;
      ctx.beginPath(); ctx.arc(x, y, 3.2, 0, Math.PI * 2); ctx.fill();
    }
    ctx.shadowBlur = 0;
    this.particles = alive;

    // synapse
    const pulse = this.synapsePulse;
    const g = ctx.createRadialGradient(cx, cy, 4, cx, cy, 46 + pulse * 14);
    g.addColorStop(0, `rgba(122,162,247,${0.55 + pulse * 0.4})`);
    g.addColorStop(1, "rgba(122,162,247,0)");
    ctx.fillStyle = g; ctx.beginPath(); ctx.arc(cx, cy, 46 + pulse * 14, 0, Math.PI * 2); ctx.fill();
    ctx.fillStyle = "#0f1626"; ctx.strokeStyle = "#7aa2f7"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(cx, cy, 26, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
    ctx.fillStyle = "#c9d6f2"; ctx.font = "600 11px ui-monospace, monospace"; ctx.textAlign = "center";
    ctx.fillText("synapse", cx, cy + 3);
    ctx.fillStyle = "#8590a2"; ctx.font = "11px ui-monospace, monospace";
    ctx.fillText(this.namespace, cx, cy + 44);
    this.synapsePulse *= 0.94;

    // nodes
    for (const [id, p] of this.positions) {
      const n = this.roster.nodes.get(id);
      if (!n) continue;
      const col = n.status === "gone" ? "#4b5261" : ROLE_COLORS[n.role] || ROLE_COLORS.peer;
      const a = n.activity;
      if (a > 0.02) {
        ctx.fillStyle = col; ctx.globalAlpha = a * 0.35;
        ctx.beginPath(); ctx.arc(p.x, p.y, 18 + a * 10, 0, Math.PI * 2); ctx.fill();
        ctx.globalAlpha = 1;
      }
      ctx.fillStyle = "#101521"; ctx.strokeStyle = col; ctx.lineWidth = id === this.selected || id === this.hover ? 3 : 2;
      ctx.beginPath();
      if (n.role === "engram") ctx.rect(p.x - 13, p.y - 13, 26, 26);
      else if (n.role === "effector") { ctx.moveTo(p.x, p.y - 16); ctx.lineTo(p.x + 15, p.y + 11); ctx.lineTo(p.x - 15, p.y + 11); ctx.closePath(); }
      else ctx.arc(p.x, p.y, 14, 0, Math.PI * 2);
      ctx.fill(); ctx.stroke();
      if (n.status === "live" && n.registered) { ctx.fillStyle = "#3fb950"; ctx.beginPath(); ctx.arc(p.x + 11, p.y - 11, 3.5, 0, Math.PI * 2); ctx.fill(); }
      ctx.fillStyle = n.status === "gone" ? "#5b6576" : "#d6dde8";
      ctx.font = "600 12px ui-monospace, monospace"; ctx.textAlign = "center";
      const below = p.y >= cy;
      ctx.fillText(n.id, p.x, below ? p.y + 32 : p.y - 24);
      if (n.caps.length) {
        ctx.fillStyle = "#6e7a8e"; ctx.font = "10.5px ui-monospace, monospace";
        const caps = n.caps.join(" · ");
        ctx.fillText(caps.length > 40 ? caps.slice(0, 39) + "…" : caps, p.x, below ? p.y + 46 : p.y - 38);
      }
      n.activity *= 0.96;
    }
    if (!this.positions.size) {
      ctx.fillStyle = "#5b6576"; ctx.font = "13px system-ui, sans-serif"; ctx.textAlign = "center";
      ctx.fillText("No participants yet: neurons appear as they REGISTER (Prism sent a DISCOVER on start).", cx, cy + 90);
    }
  }
}
