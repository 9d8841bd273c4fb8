// The data channel: one WebSocket to /ws with the session token from the page's own URL.
// Reconnects with backoff when Prism restarts; gives up on a refusal (1008: bad token/origin).

export class Channel {
  constructor({ onHello, onBatch, onState }) {
    this.onHello = onHello;
    this.onBatch = onBatch;
    this.onState = onState;
    this.token = new URLSearchParams(location.search).get("token") || "";
    this.delay = 500;
    this.ws = null;
  }

  open() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?token=${encodeURIComponent(this.token)}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.onState("connecting");
    ws.onopen = () => { this.delay = 500; };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.kind === "hello") { this.onState("live"); this.onHello(msg); }
      else if (msg.kind === "batch") this.onBatch(msg.signals || [], msg.dropped || 0);
    };
    ws.onclose = (ev) => {
      if (ev.code === 1008) { this.onState("refused", ev.reason || "refused"); return; }
      this.onState("down", ev.code === 1001 ? "Prism stopped" : "disconnected");
      setTimeout(() => this.open(), this.delay);
      this.delay = Math.min(this.delay * 2, 8000);
    };
  }
}
