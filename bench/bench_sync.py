"""The blocking facade's cost, beside its baselines in the same run.

    python -m bench sync        (or: python -m bench.bench_sync)

1. An immediately resolving call from a thread: ``SyncDendrite.call`` vs a raw
   ``asyncio.run_coroutine_threadsafe(...).result()`` and a raw anyio
   ``BlockingPortal.call`` (p50/p99 on one thread, calls/s from 16 threads).
   Measured in interleaved rounds so machine noise hits every contender alike.
2. What the facade adds to an in-process ``dispatch_and_wait`` (memory bus):
   the same call from a thread through the facade vs awaited on the loop itself.
3. Requests/s of the Flask example (examples/flask) under gunicorn gthread, with a
   loopback load generator (bounded by count and time), bus and worker as processes.

Targets: facade call p50 <= 1.2x raw run_coroutine_threadsafe; facade adds <= 100 us
p50 to dispatch_and_wait.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal

from cosmonapse import Axon
from cosmonapse_sync import SyncDendrite

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 6
PER_ROUND = 500
WARMUP = 300
THREADS = 16
PER_THREAD = 300
DAW_CALLS = 1500
HTTP_CLIENTS = 16
HTTP_MAX_REQUESTS = 4000
HTTP_MAX_SECONDS = 8.0


async def _noop() -> int:
    return 1


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class _AsyncioLoopThread:
    """A bare asyncio loop in a thread: the baseline seed 000 builds by hand."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-raw-loop", daemon=True)
        self.thread.start()

    def call(self) -> Any:
        return asyncio.run_coroutine_threadsafe(_noop(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _one_thread(contenders: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(WARMUP):
            fn()
    for r in range(ROUNDS):
        order = list(contenders.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            out = samples[name]
            for _ in range(PER_ROUND):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    return samples


def _many_threads(fn: Callable[[], Any]) -> float:
    """Calls/s with THREADS threads each making PER_THREAD calls."""
    start = threading.Barrier(THREADS + 1)

    def client() -> None:
        start.wait()
        for _ in range(PER_THREAD):
            fn()

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return THREADS * PER_THREAD / (time.perf_counter() - t0)


def bench_calls() -> list[dict[str, Any]]:
    raw = _AsyncioLoopThread()
    facades = {b: SyncDendrite("memory://", backend=b, namespace="bench") for b in ("asyncio", "trio")}
    rows = []
    with start_blocking_portal() as portal:
        contenders: dict[str, Callable[[], Any]] = {
            "raw run_coroutine_threadsafe": raw.call,
            "raw anyio BlockingPortal.call": lambda: portal.call(_noop),
            "facade.call (asyncio)": lambda: facades["asyncio"].call(_noop),
            "facade.call (trio)": lambda: facades["trio"].call(_noop),
        }
        samples = _one_thread(contenders)
        base = statistics.median(samples["raw run_coroutine_threadsafe"])
        for name, fn in contenders.items():
            p50 = statistics.median(samples[name])
            rows.append(
                {
                    "section": "call",
                    "name": name,
                    "p50_us": p50 * 1e6,
                    "p99_us": _pct(samples[name], 0.99) * 1e6,
                    "vs_raw": p50 / base,
                    "calls_per_s_16_threads": _many_threads(fn),
                }
            )
    raw.close()
    for f in facades.values():
        f.close()
    return rows


async def _echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
    return input


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _direct_dispatch_and_wait(facade: SyncDendrite, n: int) -> list[float]:
    d = facade.dendrite
    assert d is not None
    out = []
    for i in range(n + WARMUP):
        t0 = time.perf_counter()
        await d.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=10)
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


def _dispatch_and_wait_row(backend: str, label: str) -> dict[str, Any]:
    f = SyncDendrite("memory://", backend=backend, namespace="bench", heartbeat_s=0)
    f.attach_axon(Axon(neuron_id="echo", neuron_fn=_echo))
    with f:
        via: list[float] = []
        direct: list[float] = []
        raw: list[float] = []  # seed 000's way: run_coroutine_threadsafe on the same loop
        d = f.dendrite
        loop = f.call(_running_loop) if backend == "asyncio" else None
        for _ in range(WARMUP):
            f.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
        for _ in range(3):  # interleaved rounds
            direct += f.call(_direct_dispatch_and_wait, f, DAW_CALLS // 3)
            for i in range(DAW_CALLS // 3):
                t0 = time.perf_counter()
                f.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=10)
                via.append(time.perf_counter() - t0)
            for i in range(DAW_CALLS // 3 if loop is not None and d is not None else 0):
                t0 = time.perf_counter()
                coro = d.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=10)  # type: ignore[union-attr]
                asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]
                raw.append(time.perf_counter() - t0)
    p50_direct, p50_via = statistics.median(direct), statistics.median(via)
    return {
        "section": "dispatch_and_wait",
        "name": label,
        "direct_p50_us": p50_direct * 1e6,
        "facade_p50_us": p50_via * 1e6,
        "added_p50_us": (p50_via - p50_direct) * 1e6,
        "facade_p99_us": _pct(via, 0.99) * 1e6,
        "raw_rcts_p50_us": statistics.median(raw) * 1e6 if raw else None,
    }


def bench_dispatch_and_wait() -> list[dict[str, Any]]:
    rows = [_dispatch_and_wait_row(b, f"memory bus ({b})") for b in ("asyncio", "trio")]
    # The same with caller and portal on one core (threads inherit the affinity of their creator):
    # the difference is the cost of handing the work between cores.
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        os.sched_setaffinity(0, {min(cpus)})
        try:
            rows.append(_dispatch_and_wait_row("asyncio", "memory bus (asyncio), one core"))
        finally:
            os.sched_setaffinity(0, cpus)
    return rows


def bench_flask() -> list[dict[str, Any]]:
    import httpx

    from cosmonapse_sync.testing import ChildProcess, dev_bus, gunicorn

    here = ROOT / "examples" / "flask"
    with dev_bus("api-demo") as url:
        env = {"SYNAPSE_URL": url, "COSMO_NAMESPACE": "api-demo"}
        with (
            ChildProcess([sys.executable, str(here / "worker.py")], ready="worker ready", env=env),
            gunicorn("flask_app:app", chdir=here, worker_class="gthread", threads=8, env=env) as (base, _),
        ):
            latencies: list[float] = []
            errors = 0
            count = threading.Semaphore(HTTP_MAX_REQUESTS)
            deadline = time.monotonic() + HTTP_MAX_SECONDS

            def client(n: int) -> None:
                nonlocal errors
                with httpx.Client(base_url=base, timeout=30) as http:
                    http.post("/ask", json={"prompt": "warm up"})
                    while time.monotonic() < deadline and count.acquire(blocking=False):
                        t0 = time.perf_counter()
                        r = http.post("/ask", json={"prompt": f"client {n} asks"})
                        latencies.append(time.perf_counter() - t0)
                        if r.status_code != 200 or r.json()["response"] != f"3 words: client {n} asks":
                            errors += 1

            t0 = time.perf_counter()
            with ThreadPoolExecutor(HTTP_CLIENTS) as pool:
                list(pool.map(client, range(HTTP_CLIENTS)))
            elapsed = time.perf_counter() - t0
    return [
        {
            "section": "flask",
            "name": f"gunicorn gthread 2x8, {HTTP_CLIENTS} clients",
            "requests": len(latencies),
            "errors": errors,
            "requests_per_s": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": _pct(latencies, 0.99) * 1e3,
        }
    ]


def run() -> list[dict[str, Any]]:
    return bench_calls() + bench_dispatch_and_wait() + bench_flask()


def main() -> None:
    rows = run()
    print(f"{'immediately resolving call':<34}{'p50 us':>9}{'p99 us':>9}{'x raw':>8}{'calls/s @16 thr':>17}")
    for r in (r for r in rows if r["section"] == "call"):
        print(
            f"{r['name']:<34}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['vs_raw']:>8.2f}"
            f"{r['calls_per_s_16_threads']:>17,.0f}"
        )
    print()
    head = f"{'dispatch_and_wait':<34}{'on loop p50':>12}{'facade p50':>12}{'added p50':>11}"
    print(f"{head}{'facade p99':>12}{'raw rcts p50':>14}")
    for r in (r for r in rows if r["section"] == "dispatch_and_wait"):
        raw = f"{r['raw_rcts_p50_us']:>12.1f}us" if r["raw_rcts_p50_us"] is not None else f"{'-':>14}"
        print(
            f"{r['name']:<34}{r['direct_p50_us']:>10.1f}us{r['facade_p50_us']:>10.1f}us"
            f"{r['added_p50_us']:>9.1f}us{r['facade_p99_us']:>10.1f}us{raw}"
        )
    print()
    head = f"{'Flask example (POST /ask)':<34}{'requests':>9}{'errors':>8}{'req/s':>9}"
    print(f"{head}{'p50 ms':>8}{'p99 ms':>8}")
    for r in (r for r in rows if r["section"] == "flask"):
        print(
            f"{r['name']:<34}{r['requests']:>9}{r['errors']:>8}{r['requests_per_s']:>9.0f}"
            f"{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}"
        )


if __name__ == "__main__":
    main()
