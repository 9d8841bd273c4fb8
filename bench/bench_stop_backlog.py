"""STOP under backlog: STOP → Neuron cancelled with 10,000 TASKs queued behind the running one.

    python -m bench stop_backlog        (or: python -m bench.bench_stop_backlog)

A worker Dendrite runs one TASK at a time (``max_concurrent_tasks=1``) with a
Neuron that runs until cancelled.  The orchestrator (its own connection)
dispatches one TASK, waits until it runs, then dispatches 10,000 more, each on
its own trace, and waits until the worker's synapse holds them all.  Then, for
each sample: STOP the running trace and time from just before ``emit_stop`` to
the Neuron's ``except Cancelled`` on the worker; the next queued TASK starts and
is STOPped in turn, so every sample has ≥ 9,950 TASKs queued behind it.

On cosmo:// (the dev bus, in this process, loopback) and on NATS (a
nats-server on loopback), asyncio and trio.  Target: p99 ≤ 200 ms.  Before the
readers stopped waiting on one full subscription the STOP never landed at all
(the samples would be timeouts).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, Signal, SignalType, Synapse

BACKLOG = 10_000
SAMPLES = 50
WARMUP = 3
TARGET_MS = 200.0
NS = "backlog"
MARK = f"cosmonapse.{NS}.MARK"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Hang:
    """Runs until cancelled; notes which trace is running and when its cancellation arrived."""

    def __init__(self) -> None:
        self.running: str | None = None
        self.entered = anyio.Event()
        self.cancelled = anyio.Event()
        self.cancelled_at = 0.0

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> Any:
        self.running = ctx.trace_id
        self.entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled_at = time.perf_counter()
            self.cancelled.set()
            raise

    def next_round(self) -> None:
        self.entered, self.cancelled = anyio.Event(), anyio.Event()


@asynccontextmanager
async def _synapses(kind: str, nats_url: str | None) -> AsyncIterator[tuple[Synapse, Synapse]]:
    from cosmonapse.synapse.connect import connect_synapse
    from cosmonapse.synapse.dev_server import DevSynapseServer

    async with AsyncExitStack() as stack:
        if kind == "cosmo":
            server = await stack.enter_async_context(DevSynapseServer())
            url = server.url
        else:
            assert nats_url is not None
            url = nats_url
        pair = []
        for _ in range(2):
            syn = await connect_synapse(url)
            stack.push_async_callback(syn.close)
            pair.append(syn)
        yield pair[0], pair[1]


async def _queued(worker_bus: Synapse) -> int:
    return sum(sub.pending for sub in worker_bus.subscriptions)


async def _measure(kind: str, nats_url: str | None) -> list[float]:
    hang = Hang()
    samples: list[float] = []
    async with _synapses(kind, nats_url) as (worker_bus, orch_bus):
        worker = Dendrite(
            synapse=worker_bus, namespace=NS, role="worker", heartbeat_s=0, max_concurrent_tasks=1
        )
        worker.attach_axon(Axon("hang", hang))
        orch = Dendrite(synapse=orch_bus, namespace=NS, heartbeat_s=0)
        async with worker, orch:
            flush = getattr(worker_bus, "flush", None)
            if flush is not None:
                await flush()  # NATS: the worker's subscriptions are live at the server
            await orch.dispatch_task(neuron="hang", input={})
            with anyio.fail_after(30):
                await hang.entered.wait()
            # A marker published after the backlog, to the worker's own connection: the bus keeps
            # one publisher's order, so when it arrives the reader has filed every TASK before it.
            marked = anyio.Event()

            async def on_mark(sig: Signal) -> None:
                marked.set()

            await worker_bus.subscribe(MARK, on_mark)
            if flush is not None:
                await flush()
            for _ in range(BACKLOG):
                await orch.dispatch_task(neuron="hang", input={})
            await orch_bus.publish(MARK, Signal(type=SignalType.AUDIT))
            with anyio.fail_after(120):
                await marked.wait()
            assert await _queued(worker_bus) >= BACKLOG - 1
            for i in range(SAMPLES + WARMUP):
                trace = hang.running
                assert trace is not None
                with anyio.fail_after(30):
                    await hang.entered.wait()
                    t0 = time.perf_counter()
                    await orch.emit_stop(trace_id=trace)
                    await hang.cancelled.wait()
                if i >= WARMUP:
                    samples.append(hang.cancelled_at - t0)
                hang.next_round()
                with anyio.fail_after(30):
                    await hang.entered.wait()  # the next queued TASK runs
            queued = await _queued(worker_bus)
            assert queued >= BACKLOG - SAMPLES - WARMUP - 2, queued
            assert worker_bus.dropped == 0
    return samples


def run() -> list[dict[str, Any]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from nats_util import NatsServer, nats_server_binary  # the tests' helper: one way to start it

    rows: list[dict[str, Any]] = []
    kinds = ["cosmo"] + (["nats"] if nats_server_binary() else [])
    with NatsServer() if "nats" in kinds else _Nothing() as server:
        for kind in kinds:
            for backend in ("asyncio", "trio"):
                url = server.url if kind == "nats" and server is not None else None
                samples = anyio.run(_measure, kind, url, backend=backend)
                p50, p99 = statistics.median(samples) * 1000, _pct(samples, 0.99) * 1000
                bus = "cosmo://" if kind == "cosmo" else "nats://"
                rows.append(
                    {"bus": bus, "backend": backend, "n": len(samples), "p50_ms": p50, "p99_ms": p99,
                     "ok": p99 <= TARGET_MS}
                )  # fmt: skip
    return rows


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"STOP → Neuron cancelled with {BACKLOG:,} TASKs queued behind the running one",
        f"{'bus':9} {'backend':8} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}  target (p99)",
    ]
    for r in rows:
        verdict = "ok" if r["ok"] else "MISSED"
        lines.append(
            f"{r['bus']:9} {r['backend']:8} {r['n']:4d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
            f"  ≤ {TARGET_MS:.0f} ms {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    print(format_rows(run()))


if __name__ == "__main__":
    main()
