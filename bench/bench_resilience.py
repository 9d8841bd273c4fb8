"""Resilience benchmark: STOP → Neuron-cancelled latency, and auction award time vs its deadline.

    python -m bench resilience        (or: python -m bench.bench_resilience)

* STOP latency: from just before ``emit_stop`` to the moment the running
  Neuron's ``except Cancelled`` runs on the worker — in-process
  (MemorySynapse) and over ``cosmo://`` (the dev bus on loopback, one
  connection per Dendrite).  Targets: p99 ≤ 50 ms in-process, ≤ 200 ms over
  cosmo://.
* Auction: 10 bidder Dendrites; time from the TASK_OFFER to the TASK_AWARDED,
  both timed where they cross the bus.  ``lowest_cost`` waits its whole
  window, so the target is deadline + 10 ms at p99; ``first_bid`` awards at
  the first bid.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext, Signal, Synapse

STOP_ROUNDS = 200
STOP_ROUNDS_DEV = 100
WARMUP = 10
AUCTIONS = 25
BIDDERS = 10
DEADLINE_MS = 100
NS = "bench"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Hang:
    """A Neuron that runs until cancelled and notes when the cancellation reached it."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.cancelled = anyio.Event()
        self.cancelled_at = 0.0

    def reset(self) -> None:
        self.entered, self.cancelled = anyio.Event(), anyio.Event()

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> Any:
        self.entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled_at = time.perf_counter()
            self.cancelled.set()
            raise


@asynccontextmanager
async def _buses(transport: str, count: int) -> AsyncIterator[list[Synapse]]:
    """*count* Synapses on one bus: the same MemorySynapse, or separate cosmo:// connections."""
    async with AsyncExitStack() as stack:
        if transport == "memory":
            bus = await stack.enter_async_context(MemorySynapse())
            yield [bus] * count
            return
        from cosmonapse.synapse.connect import connect_synapse
        from cosmonapse.synapse.dev_server import DevSynapseServer

        server = await stack.enter_async_context(DevSynapseServer())
        buses = []
        for _ in range(count):
            syn = await connect_synapse(server.url)
            stack.push_async_callback(syn.close)
            buses.append(syn)
        yield buses


async def _stop_latency(transport: str, rounds: int) -> list[float]:
    hang = Hang()
    async with _buses(transport, 2) as (worker_bus, orch_bus):
        worker = Dendrite(synapse=worker_bus, namespace=NS, role="worker", heartbeat_s=0)
        worker.attach_axon(Axon(neuron_id="hang", neuron_fn=hang))
        orch = Dendrite(synapse=orch_bus, namespace=NS, heartbeat_s=0)
        samples = []
        async with worker, orch:
            for i in range(rounds + WARMUP):
                hang.reset()
                with anyio.fail_after(10):
                    pw = await orch.dispatch(neuron="hang", input={})
                    await hang.entered.wait()
                    t0 = time.perf_counter()
                    await orch.emit_stop(trace_id=pw.trace_id)
                    await hang.cancelled.wait()
                if i >= WARMUP:
                    samples.append(hang.cancelled_at - t0)
                await pw.close()
    return samples


async def _auction_latency(select: str) -> list[float]:
    """Offer-to-award times (seconds) for AUCTIONS auctions among BIDDERS bidders."""
    offered: dict[str, float] = {}
    awarded: dict[str, float] = {}

    async def on_offer(sig: Signal) -> None:
        offered[sig.trace_id] = time.perf_counter()

    async def on_award(sig: Signal) -> None:
        awarded[sig.trace_id] = time.perf_counter()

    async def work(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        return {"done": ctx.neuron_id}

    def bidder(d: Dendrite, neuron: str) -> Callable[[Signal], Any]:
        async def place(offer: Signal) -> None:
            await d.bid(offer, neuron=neuron, cost=random.random(), confidence=random.random())

        return place

    async with MemorySynapse() as bus, AsyncExitStack() as stack:
        await bus.subscribe(f"cosmonapse.{NS}.TASK_OFFER", on_offer)  # timed where it crosses the bus
        await bus.subscribe(f"cosmonapse.{NS}.TASK_AWARDED", on_award)
        for i in range(BIDDERS):
            d = Dendrite(synapse=bus, namespace=NS, role="worker", dendrite_id=f"bidder{i}", heartbeat_s=0)
            d.attach_axon(Axon(neuron_id=f"n{i}", neuron_fn=work))
            d.on_task_offer(bidder(d, f"n{i}"))
            await stack.enter_async_context(d)
        orch = await stack.enter_async_context(Dendrite(synapse=bus, namespace=NS, heartbeat_s=0))
        for _ in range(AUCTIONS):
            pw = await orch.dispatch_offer(input={}, select=select, deadline_ms=DEADLINE_MS)
            await pw.wait(5)
            await pw.close()
    return [awarded[t] - offered[t] for t in offered if t in awarded]


async def _measure(include_dev: bool) -> dict[str, list[float]]:
    out = {
        "stop memory": await _stop_latency("memory", STOP_ROUNDS),
        "auction lowest_cost": await _auction_latency("lowest_cost"),
        "auction first_bid": await _auction_latency("first_bid"),
    }
    if include_dev:
        out["stop cosmo"] = await _stop_latency("cosmo", STOP_ROUNDS_DEV)
    return out


def _has_dev_bus() -> bool:
    try:
        from cosmonapse.synapse.connect import connect_synapse  # noqa: F401
        from cosmonapse.synapse.dev_server import DevSynapseServer  # noqa: F401
    except ImportError:
        return False
    return True


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    dev = _has_dev_bus()
    targets = {
        "stop memory": ("STOP → Neuron cancelled, in-process (ms)", 50.0),
        "stop cosmo": ("STOP → Neuron cancelled, cosmo:// (ms)", 200.0),
        "auction lowest_cost": (f"offer → award, lowest_cost, {BIDDERS} bidders (ms)", DEADLINE_MS + 10.0),
        "auction first_bid": (f"offer → award, first_bid, {BIDDERS} bidders (ms)", DEADLINE_MS + 10.0),
    }
    for backend in ("asyncio", "trio"):
        measured = anyio.run(_measure, dev, backend=backend)
        for key, (metric, limit) in targets.items():
            samples = measured.get(key)
            if not samples:
                continue
            p50, p99 = statistics.median(samples) * 1000, _pct(samples, 0.99) * 1000
            rows.append(
                {
                    "backend": backend,
                    "metric": metric,
                    "n": len(samples),
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "target_ms": limit,
                    "ok": p99 <= limit,
                }
            )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"resilience (deadline {DEADLINE_MS} ms for auctions)",
        f"{'backend':8} {'metric':50} {'n':>4} {'p50':>8} {'p99':>8}  target (p99)",
    ]
    for r in rows:
        verdict = "ok" if r["ok"] else "MISSED"
        lines.append(
            f"{r['backend']:8} {r['metric']:50} {r['n']:4d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
            f"  ≤ {r['target_ms']:.0f} ms {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    print(format_rows(run()))


if __name__ == "__main__":
    main()
