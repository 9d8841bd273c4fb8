"""In-process core benchmark: dispatch_and_wait vs a raw anyio ping-pong, on asyncio and trio.

    python -m bench.bench_core        (or: python bench/run.py)

Every figure is measured in the same run as its baseline; quote ratios.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, Directed, MemorySynapse, Signal, SignalType, new_trace_id
from cosmonapse.core import DEFAULT_MAX_OPEN_PATHWAYS
from cosmonapse.deadlines import Deadlines

SEQ_CALLS = 3000
WARMUP = 300
IN_FLIGHT = 1000
ROUNDS_PER_CLIENT = 5
MEMORY_COUNT = 10_000
#: The issue's scenario: Pathways opened by dispatch() and never closed nor answered.
UNCLOSED = 120_000


def _pct(samples: list[float], q: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(q * len(samples)))]


async def _raw_pingpong_seq(n: int) -> list[float]:
    req_send, req_recv = anyio.create_memory_object_stream[int](1)
    resp_send, resp_recv = anyio.create_memory_object_stream[int](1)
    out: list[float] = []

    async def server() -> None:
        async for x in req_recv:
            await resp_send.send(x)

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        for i in range(n + WARMUP):
            t0 = time.perf_counter()
            await req_send.send(i)
            await resp_recv.receive()
            if i >= WARMUP:
                out.append(time.perf_counter() - t0)
        tg.cancel_scope.cancel()
    return out


async def _rate(
    clients: int, rounds: int, client: Callable[[], Awaitable[None]], *services: Callable[[], Awaitable[None]]
) -> float:
    """Round trips/s of *clients* concurrent *client* tasks of *rounds* calls each, with
    *services* (the server, its timer task) running beside them until the clients are done."""
    async with anyio.create_task_group() as tg:
        for service in services:
            tg.start_soon(service)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as clients_tg:
            for _ in range(clients):
                clients_tg.start_soon(client)
        elapsed = time.perf_counter() - t0
        tg.cancel_scope.cancel()
    return clients * rounds / elapsed


async def _raw_inflight(clients: int, rounds: int) -> float:
    """Round trips/s with *clients* concurrent callers through one server task."""
    req_send, req_recv = anyio.create_memory_object_stream[tuple[int, Any]](clients)

    async def server() -> None:
        async for _i, reply in req_recv:
            await reply.send(None)

    async def client() -> None:
        s, r = anyio.create_memory_object_stream[None](1)
        for i in range(rounds):
            await req_send.send((i, s))
            await r.receive()

    return await _rate(clients, rounds, client, server)


async def _guarded_inflight(clients: int, rounds: int) -> float:
    """``_raw_inflight`` plus the least a ``dispatch_and_wait`` must do per call: the floor.

    Per call, with the cheapest primitive we have for each: the caller builds a TASK
    Signal (fresh ids and timestamp, attrs checks), files an ``anyio.Event`` under its
    trace id and waits on it under a deadline (one shared ``Deadlines`` timer task, as
    Pathways wait); the server task files one cancel scope under the trace id (what
    STOP cancels) and, inside it, builds the reply Signal, stores it for the waiter it
    finds by the reply's trace id and wakes it.  Left out: a runner task per call
    (Neurons running concurrently), the subscription buffers and their backpressure,
    Pathway objects, the bus's subject index, telemetry.
    """
    req_send, req_recv = anyio.create_memory_object_stream[Signal](clients)
    waiting: dict[str, tuple[anyio.Event, list[Signal]]] = {}
    scopes: dict[str, anyio.CancelScope] = {}
    deadlines = Deadlines()
    echo_to = Directed(id="echo")

    async def server() -> None:
        async for task in req_recv:
            scope = scopes[task.trace_id] = anyio.CancelScope()
            with scope:
                reply = Signal(type=SignalType.AGENT_OUTPUT, trace_id=task.trace_id, parent_id=task.id,
                               directed=task.directed, payload={"output": task.payload["input"]})  # fmt: skip
                event, box = waiting.pop(reply.trace_id)
                box.append(reply)
                event.set()
            del scopes[task.trace_id]

    async def client() -> None:
        for i in range(rounds):
            task = Signal(type=SignalType.TASK, trace_id=new_trace_id(), directed=echo_to,
                          payload={"input": {"i": i}})  # fmt: skip
            event, box = waiting[task.trace_id] = anyio.Event(), []
            timer = deadlines.schedule(60)
            timer.target = event
            try:
                await req_send.send(task)
                await event.wait()
            finally:
                timer.cancel()
            if timer.expired or not box:
                raise TimeoutError(f"no reply on {task.trace_id} within 60 s")

    return await _rate(clients, rounds, client, server, deadlines.run)


async def echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
    return input


async def _with_pair(fn: Any, **worker_kw: Any) -> Any:
    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="bench", role="worker", heartbeat_s=0, **worker_kw)
        worker.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
        orch = Dendrite(synapse=syn, namespace="bench", heartbeat_s=0, max_concurrent_handlers=4096)
        async with worker, orch:
            return await fn(orch)


async def _dispatch_seq(orch: Dendrite) -> list[float]:
    out: list[float] = []
    for i in range(SEQ_CALLS + WARMUP):
        t0 = time.perf_counter()
        await orch.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=10)
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


async def _dispatch_inflight(orch: Dendrite) -> float:
    async def client() -> None:
        for i in range(ROUNDS_PER_CLIENT):
            await orch.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=60)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(client)
    return IN_FLIGHT * ROUNDS_PER_CLIENT / (time.perf_counter() - t0)


async def _bytes_per_pathway() -> float:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="bench", heartbeat_s=0)
        async with orch:
            await orch.observe_pathway("trc_warmup")
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            pws = [await orch.observe_pathway(f"trc_{i:026d}") for i in range(MEMORY_COUNT)]
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            del pws
            # trace id strings are the caller's, not the Pathway's: subtract them
            id_bytes = MEMORY_COUNT * (49 + 30)
            return (after - before - id_bytes) / MEMORY_COUNT


async def _unclosed_pathways_mb(max_open_pathways: int) -> float:
    """Memory still held after UNCLOSED dispatches whose Pathways nobody closes (MB)."""
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="bench", heartbeat_s=0, max_open_pathways=max_open_pathways)
        async with orch:
            await orch.dispatch(neuron="nobody", input={})
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(UNCLOSED):
                await orch.dispatch(neuron="nobody", input={"i": i})
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            return (after - before) / 1e6


async def _bytes_per_call() -> float:
    release = anyio.Event()
    started = 0
    all_started = anyio.Event()

    async def hold(input: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal started
        started += 1
        if started == MEMORY_COUNT:
            all_started.set()
        await release.wait()
        return {}

    async with MemorySynapse() as syn:
        worker = Dendrite(
            synapse=syn, namespace="bench", role="worker", heartbeat_s=0, max_concurrent_tasks=MEMORY_COUNT
        )
        worker.attach_axon(Axon(neuron_id="hold", neuron_fn=hold))
        orch = Dendrite(synapse=syn, namespace="bench", heartbeat_s=0)
        async with worker, orch:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            async with anyio.create_task_group() as tg:
                for _ in range(MEMORY_COUNT):
                    tg.start_soon(lambda: orch.dispatch_and_wait(neuron="hold", input={}, timeout_s=120))
                with anyio.fail_after(120):
                    await all_started.wait()
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                release.set()
            return (after - before) / MEMORY_COUNT


async def _measure() -> dict[str, float]:
    raw_seq = await _raw_pingpong_seq(SEQ_CALLS)
    seq = await _with_pair(_dispatch_seq)
    raw_rate = await _raw_inflight(IN_FLIGHT, ROUNDS_PER_CLIENT)
    rate = await _with_pair(_dispatch_inflight, max_concurrent_tasks=IN_FLIGHT)
    return {
        "raw_p50": statistics.median(raw_seq) * 1e6,
        "raw_p99": _pct(raw_seq, 0.99) * 1e6,
        "p50": statistics.median(seq) * 1e6,
        "p99": _pct(seq, 0.99) * 1e6,
        "seq_rate": 1 / statistics.mean(seq),
        "raw_inflight": raw_rate,
        "inflight": rate,
        "pathway_bytes": await _bytes_per_pathway(),
        "call_bytes": await _bytes_per_call(),
    }


def run() -> list[dict[str, Any]]:
    rows = []
    capped = anyio.run(_unclosed_pathways_mb, DEFAULT_MAX_OPEN_PATHWAYS)
    uncapped = anyio.run(_unclosed_pathways_mb, 10**9)
    rows.append(
        {"backend": "asyncio", "metric": f"MB kept by {UNCLOSED:,} unclosed Pathways", "value": capped,
         "baseline": uncapped, "ratio": capped / uncapped, "target": "bounded (baseline: no cap)"}
    )  # fmt: skip
    for backend in ("asyncio", "trio"):
        m = anyio.run(_measure, backend=backend)
        rows += [
            {"backend": backend, "metric": "sequential dispatch_and_wait p50 (µs)", "value": m["p50"],
             "baseline": m["raw_p50"], "ratio": m["p50"] / m["raw_p50"], "target": "≤ 3× raw ping-pong"},
            {"backend": backend, "metric": "sequential dispatch_and_wait p99 (µs)", "value": m["p99"],
             "baseline": m["raw_p99"], "ratio": m["p99"] / m["raw_p99"], "target": ""},
            {"backend": backend, "metric": "sequential round trips/s", "value": m["seq_rate"],
             "baseline": None, "ratio": None, "target": ""},
            {"backend": backend, "metric": f"{IN_FLIGHT} in flight, round trips/s", "value": m["inflight"],
             "baseline": m["raw_inflight"], "ratio": m["inflight"] / m["raw_inflight"],
             "target": "≥ 20,000/s"},
            {"backend": backend, "metric": "bytes per open Pathway", "value": m["pathway_bytes"],
             "baseline": None, "ratio": None, "target": "≤ 2048"},
            {"backend": backend, "metric": "bytes per in-flight call", "value": m["call_bytes"],
             "baseline": None, "ratio": None, "target": ""},
        ]  # fmt: skip
    return rows


def format_rows(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [title, f"{'backend':8} {'metric':42} {'value':>12} {'baseline':>12} {'ratio':>7}  target"]
    for r in rows:
        base = f"{r['baseline']:12.1f}" if r.get("baseline") is not None else " " * 12
        ratio = f"{r['ratio']:7.2f}" if r.get("ratio") is not None else " " * 7
        lines.append(f"{r['backend']:8} {r['metric']:42} {r['value']:12.1f} {base} {ratio}  {r['target']}")
    return "\n".join(lines)


def main() -> None:
    print(format_rows("core (in-process MemorySynapse)", run()))


if __name__ == "__main__":
    main()
