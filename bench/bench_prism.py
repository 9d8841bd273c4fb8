"""Prism in a real headless Chromium under a flood: frame times and JS heap at 10,000 Signals/s.

    python -m bench.bench_prism        (or: python -m bench prism)

Processes: a dev bus (``cosmo synapse start``), Prism (``cosmo prism --no-browser``),
Debian's Chromium driven by Playwright, and a load process that publishes a workflow-like
mix (TASK → THOUGHT_DELTAs → TOOL_CALL/RESULT → AGENT_OUTPUT → FINAL, ~250 traces/s) at a
paced rate.  For each view (Brain, Signals, Traces, Metrics) the page is measured idle
(the baseline, same run) and then under the load:

* frames — intervals between ``requestAnimationFrame`` callbacks: median, p95, p99, and
  the share of frames longer than 50 ms (what a person feels as jank);
* heap — ``JSHeapUsedSize`` from the DevTools protocol at the end of the window
  (after a GC), and its peak while loaded: bounded buffers must keep it flat;
* delivered — Signals the page ingested per second, and how many it or the server dropped;
* Prism CPU — the server process's CPU time over the window.

Quote medians and ratios: the machine is shared and noisy.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from bench.children import stop_child

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COSMO_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NS = "bench"
RATE = 10_000
WINDOW_S = 8.0
VIEWS = ["brain", "signals", "traces", "metrics"]


@contextmanager
def _child(*args: str, ready: str) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{args} exited before it was ready (code {proc.wait()})")
            if found := re.search(ready, line):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args} not ready within 30 s")
        yield proc, found
    finally:
        stop_child(proc)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the load ------------------------------------------------------------------------


async def _load(url: str, rate: int, seconds: float) -> None:
    """Publish about *rate* Signals/s for *seconds*, in 10 ms ticks; print what was sent."""
    from cosmonapse import Directed, Signal, SignalType, connect_synapse, new_trace_id

    T = SignalType
    workers = [f"worker-{i}" for i in range(8)]
    sent = 0

    def trace_signals(n: int) -> list[tuple[str, Signal]]:
        trace, who = new_trace_id(), workers[n % len(workers)]
        task = Signal(
            type=T.TASK, trace_id=trace, directed=Directed(who), payload={"input": {"prompt": "x" * 80}}
        )
        out = [task]
        out += [Signal(type=T.THOUGHT_DELTA, trace_id=trace, parent_id=task.id, directed=Directed(who),
                       payload={"delta": f"token{i} ", "seq": i}) for i in range(30)]  # fmt: skip
        call = Signal(type=T.TOOL_CALL, trace_id=trace, parent_id=task.id, directed=Directed(who),
                      payload={"tool": "search", "args": {"q": "x" * 40}, "call_id": "c"})  # fmt: skip
        out += [call, Signal(type=T.TOOL_RESULT, trace_id=trace, parent_id=call.id, directed=Directed(who),
                             payload={"tool": "search", "result": {"hits": 3}, "call_id": "c"})]  # fmt: skip
        reply = Signal(type=T.AGENT_OUTPUT, trace_id=trace, parent_id=task.id, directed=Directed(who),
                       payload={"output": {"response": "y" * 120}})  # fmt: skip
        out += [reply, Signal(type=T.FINAL, trace_id=trace, parent_id=reply.id, directed=Directed(who),
                              payload={"result": {"response": "y" * 120}})]  # fmt: skip
        return [(f"cosmonapse.{NS}.{s.type.value}", s) for s in out]

    async with await connect_synapse(url) as bus:
        start = anyio.current_time()
        queue: list[tuple[str, Signal]] = []
        n = 0
        while (now := anyio.current_time()) - start < seconds:
            due = int((now - start) * rate) - sent
            while len(queue) < due:
                queue.extend(trace_signals(n))
                n += 1
            for subject, sig in queue[:due]:
                await bus.publish(subject, sig)
            del queue[:due]
            sent += max(due, 0)
            await anyio.sleep(0.01)  # allowed: pacing the load generator
    print(f"sent {sent} in {seconds:.1f} s", flush=True)


# -- the browser side ------------------------------------------------------------------

_START = """() => {
  window.__frames = []; window.__run = true;
  const tick = (t) => { window.__frames.push(t); if (window.__run) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}"""
_STOP = """() => { window.__run = false; return window.__frames; }"""


def _frames(page: Any, seconds: float, cdp: Any) -> tuple[list[float], float]:
    page.evaluate(_START)
    peak = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        page.wait_for_timeout(500)
        peak = max(peak, _heap(cdp))
    stamps = page.evaluate(_STOP)
    return [b - a for a, b in itertools.pairwise(stamps)], peak


def _heap(cdp: Any) -> float:
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return metrics["JSHeapUsedSize"] / 1e6


def _gc_heap(cdp: Any) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return _heap(cdp)


def _summary(intervals: list[float]) -> dict[str, float]:
    if len(intervals) < 3:
        return {"fps": 0.0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "long": 100.0}
    q = statistics.quantiles(intervals, n=100)
    return {
        "fps": 1000 / statistics.fmean(intervals),
        "p50": statistics.median(intervals),
        "p95": q[94],
        "p99": q[98],
        "long": 100 * sum(i > 50 for i in intervals) / len(intervals),
    }


def run(rate: int = RATE, window: float = WINDOW_S) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    rows: list[dict[str, Any]] = []
    bus_args = ("-m", "cosmonapse", "synapse", "start", "memory", "--port", "0", "-n", NS)
    with _child(*bus_args, ready=r"listening on (cosmo://\S+)") as (_, bus_match):
        url = bus_match.group(1)
        prism_args = ("-m", "cosmonapse", "prism", "--url", url, "-n", NS, "--no-browser", "--port", "0")
        with (
            _child(*prism_args, ready=r" at (http://\S+)") as (prism, page_match),
            sync_playwright() as p,
            tempfile.TemporaryDirectory() as profile,
        ):
            ctx = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=FLAGS,
                headless=True,
                viewport={"width": 1500, "height": 900},
            )
            page = ctx.new_page()
            cdp = ctx.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(page_match.group(1))
            page.wait_for_selector("#status.live")
            for view in VIEWS:
                page.click(f"#tabs button[data-tab={view}]")
                if view == "traces":
                    page.wait_for_selector(".trace-item", timeout=60_000)
                    page.click(".trace-item")
                idle, _ = _frames(page, 3.0, cdp)
                heap_idle = _gc_heap(cdp)
                before = page.evaluate("() => window.prism.stats()")
                cpu0 = _cpu_seconds(prism.pid)
                load = subprocess.Popen(
                    [sys.executable, "-m", "bench.bench_prism", "--load", url, str(rate), str(window)],
                    cwd=ROOT, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                t0 = time.monotonic()
                busy, peak = _frames(page, window, cdp)
                out, _ = load.communicate(timeout=120)
                elapsed = time.monotonic() - t0
                cpu = _cpu_seconds(prism.pid) - cpu0
                page.wait_for_timeout(500)
                after = page.evaluate("() => window.prism.stats()")
                sent = int(out.split()[1])
                rows.append({
                    "view": view, "idle": _summary(idle), "busy": _summary(busy), "heap_idle": heap_idle,
                    "heap_peak": peak, "heap_after": _gc_heap(cdp), "sent": sent, "window": window,
                    "got": after["total"] - before["total"], "dropped": after["dropped"] - before["dropped"],
                    "ring": after["ring"], "prism_cpu": 100 * cpu / elapsed,
                })  # fmt: skip
            ctx.close()
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'view':<8} {'sent/s':>7} {'page/s':>7} {'drop':>5} | {'fps':>5} {'p50 ms':>6} {'p95':>6}"
        f" {'p99':>6} {'>50ms':>6} | idle: {'fps':>4} {'p95':>5} | heap MB idle/peak/after | prism CPU"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        b, i = r["busy"], r["idle"]
        rates = f"{r['sent'] / r['window']:>7.0f} {r['got'] / r['window']:>7.0f} {r['dropped']:>5}"
        lines.append(
            f"{r['view']:<8} {rates} |"
            f" {b['fps']:>5.1f} {b['p50']:>6.1f} {b['p95']:>6.1f} {b['p99']:>6.1f} {b['long']:>5.1f}% |"
            f"       {i['fps']:>4.0f} {i['p95']:>5.1f} | {r['heap_idle']:>5.1f} / {r['heap_peak']:>5.1f} /"
            f" {r['heap_after']:>5.1f}     | {r['prism_cpu']:>4.0f}%"
        )
    return "\n".join(lines)


def main() -> None:
    if not os.path.exists(CHROMIUM):
        print(f"skipped: no Chromium at {CHROMIUM} (apt-get install chromium)")
        return
    rows = run()
    print(
        f"Prism in headless Chromium at {RATE:,} Signals/s, {WINDOW_S:.0f} s per view, {os.cpu_count()} CPUs"
    )
    print(format_rows(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        anyio.run(_load, sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
