"""Load benchmark: 10,000 running Neuron calls on one worker, and workers sharing a capability on NATS.

    python -m bench load

* memory: one worker (in-process bus) holding 10,000 running calls of an I/O-bound
  Neuron (it awaits an event): traced bytes per running call, beside a bare anyio
  task awaiting an event (the floor any runtime on anyio pays per concurrent call);
* 10,000 at once over NATS: a worker process with the default limit, a Neuron that
  sleeps 1 s, an orchestrator process firing 10,000 ``dispatch_and_wait`` at once;
* scaling: 1, 2 and 3 worker processes behind capability ``work`` (each
  ``max_concurrent_tasks=20``, a Neuron sleeping 100 ms), 200 calls in flight;
* one of 3 workers saturated (its 20 runners held by addressed calls, 30 routed calls
  in flight: the other two have room) and one of 3 SIGKILLed mid-run at 200 in flight
  (callers retry: ``RetryStrategy(timeout_s=2)``).
"""

from __future__ import annotations

import gc
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext, RetryStrategy, Signal, SignalType
from cosmonapse.signal import Directed
from cosmonapse.synapse.nats import NatsSynapse

N_MEMORY = 10_000
N_NATS = 10_000
WORK_LIMIT = 20
WORK_SLEEP_S = 0.1
IN_FLIGHT = 200
CALLS = 1200


# -- memory per running call ---------------------------------------------------------------


class _AllIn:
    """Counts arrivals; ``event`` is set when *n* have arrived; ``release`` lets them go."""

    def __init__(self, n: int) -> None:
        self.n, self.count = n, 0
        self.event, self.release = anyio.Event(), anyio.Event()

    async def arrive(self) -> None:
        self.count += 1
        if self.count == self.n:
            self.event.set()
        await self.release.wait()


async def _traced_bytes_per(gate: _AllIn, start_all: Callable[[], Awaitable[None]]) -> float:
    """Traced bytes per waiter once *start_all* has all of them waiting at *gate*."""
    gc.collect()
    tracemalloc.start()
    b0 = tracemalloc.get_traced_memory()[0]
    try:
        await start_all()
        with anyio.fail_after(120):
            await gate.event.wait()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - b0) / gate.n
    finally:
        tracemalloc.stop()
        gate.release.set()


async def _bare_task_bytes(n: int) -> float:
    gate = _AllIn(n)
    async with anyio.create_task_group() as tg:

        async def start_all() -> None:
            for _ in range(n):
                tg.start_soon(gate.arrive)

        return await _traced_bytes_per(gate, start_all)


async def _worker_bytes(n: int) -> float:
    gate = _AllIn(n)

    async def io(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await gate.arrive()
        return {}

    async with MemorySynapse(subscription_buffer=n) as syn:
        worker = Dendrite(synapse=syn, namespace="mem", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon("io", io))
        async with worker:
            tasks = [
                Signal(type=SignalType.TASK, directed=Directed("io"), payload={"input": {}}) for _ in range(n)
            ]

            async def start_all() -> None:
                for task in tasks:
                    await syn.publish("cosmonapse.mem.TASK", task)

            return await _traced_bytes_per(gate, start_all)


# -- worker processes ----------------------------------------------------------------------------


def _spawn(url: str, ns: str, name: str, limit: int, sleep_s: float) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.bench_load", "worker", url, ns, name, str(limit), str(sleep_s)]
    return subprocess.Popen(args, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE)


async def _worker_main(url: str, ns: str, name: str, limit: int, sleep_s: float) -> None:
    async def work(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await anyio.sleep(sleep_s)  # an I/O-bound Neuron: an HTTP call, say
        return {"by": name}

    async def hog(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await anyio.sleep(float(input.get("s", 60)))
        return {}

    async with NatsSynapse(url) as syn:
        worker = Dendrite(
            synapse=syn,
            namespace=ns,
            role="worker",
            dendrite_id=name,
            heartbeat_s=0,
            max_concurrent_tasks=limit,
        )
        worker.attach_axon(Axon(f"work-{name}", work, ["work"]))
        worker.attach_axon(Axon(f"hog-{name}", hog))
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with worker:
                await syn.flush()
                print("ready", flush=True)
                async for _ in signals:
                    break


def _wait_ready(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"worker did not start: {line!r}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _fire(
    url: str,
    ns: str,
    calls: int,
    in_flight: int,
    *,
    target: dict[str, Any] | None = None,
    retry: RetryStrategy | None = None,
    timeout_s: float = 30,
    during: Any = None,
) -> dict[str, Any]:
    """*calls* calls (routed to ``work`` unless *target*), *in_flight* at a time: rate, errors, by whom."""
    target = target or {"capabilities": ["work"]}
    by: dict[str, int] = {}
    errors: list[str] = []
    lat: list[float] = []
    async with NatsSynapse(url) as syn:
        orch = Dendrite(synapse=syn, namespace=ns, heartbeat_s=0, max_concurrent_handlers=4096)
        async with orch:
            next_i = [0]
            third = anyio.Event()

            async def client() -> None:
                while next_i[0] < calls:
                    next_i[0] += 1
                    if next_i[0] == calls // 3:
                        third.set()
                    t0 = time.perf_counter()
                    try:
                        reply = await orch.dispatch_and_wait(
                            **target, input={}, timeout_s=timeout_s, retry=retry
                        )
                        who = str(reply.payload.get("output", {}).get("by", reply.type.value))
                        by[who] = by.get(who, 0) + 1
                        lat.append(time.perf_counter() - t0)
                    except Exception as exc:
                        errors.append(type(exc).__name__)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(in_flight):
                    tg.start_soon(client)
                if during is not None:
                    await during(orch, third)
            elapsed = time.perf_counter() - t0
    return {
        "rate": calls / elapsed,
        "errors": len(errors),
        "by": by,
        "p50": statistics.median(lat) if lat else 0,
        "elapsed": elapsed,
    }


def _scenarios(url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    procs = [_spawn(url, "big", "big", 10_000, 1.0)]
    try:
        _wait_ready(procs)
        big = {"neuron": "work-big"}
        r = anyio.run(lambda: _fire(url, "big", N_NATS, N_NATS, target=big))
        rows.append(
            {
                "case": f"{N_NATS:,} calls at once, 1 worker (default limit), Neuron sleeps 1 s",
                "value": f"{r['errors']} errors, all done in {r['elapsed']:.1f} s",
            }
        )
    finally:
        _stop(procs)
    base = None
    for n in (1, 2, 3):
        ns = f"scale{n}"
        procs = [_spawn(url, ns, f"w{i}", WORK_LIMIT, WORK_SLEEP_S) for i in range(n)]
        try:
            _wait_ready(procs)
            r = anyio.run(lambda ns=ns: _fire(url, ns, CALLS, IN_FLIGHT))
        finally:
            _stop(procs)
        base = base or r["rate"]
        rows.append(
            {
                "case": f"{n} worker(s) × {WORK_LIMIT} runners, Neuron 100 ms, {IN_FLIGHT} in flight",
                "value": f"{r['rate']:.0f} calls/s ({r['rate'] / base:.2f}×), {r['errors']} errors, "
                f"p50 {r['p50'] * 1e3:.0f} ms",
            }
        )

    # One worker saturated by long addressed calls; routed work must go to the other two.
    procs = [_spawn(url, "sat", f"w{i}", WORK_LIMIT, WORK_SLEEP_S) for i in range(3)]
    try:
        _wait_ready(procs)

        async def saturate(orch: Dendrite, _: Any) -> None:
            for _ in range(WORK_LIMIT):
                await orch.dispatch_task(neuron="hog-w0", input={"s": 30})

        # 30 in flight: the two others have room (2 × 20); w0 has none.
        r = anyio.run(lambda: _fire(url, "sat", CALLS // 2, 30, timeout_s=10, during=saturate))
        rows.append(
            {
                "case": "3 workers, w0 saturated by 20 long calls, 30 in flight",
                "value": f"{r['rate']:.0f} calls/s, {r['errors']} timeouts, ran by {sorted(r['by'].items())}",
            }
        )
    finally:
        _stop(procs)

    # One worker SIGKILLed a third of the way in; callers retry after 2 s.
    procs = [_spawn(url, "kill", f"w{i}", WORK_LIMIT, WORK_SLEEP_S) for i in range(3)]
    try:
        _wait_ready(procs)

        async def kill(orch: Dendrite, third: anyio.Event) -> None:
            await third.wait()
            procs[0].send_signal(signal.SIGKILL)

        r = anyio.run(
            lambda: _fire(url, "kill", CALLS, IN_FLIGHT, retry=RetryStrategy(timeout_s=2), during=kill)
        )
        rows.append(
            {
                "case": "3 workers, w0 SIGKILLed after 1/3 (retry after 2 s)",
                "value": f"{r['rate']:.0f} calls/s, {r['errors']} failed, ran by {sorted(r['by'].items())}",
            }
        )
    finally:
        _stop(procs)
    return rows


def run() -> list[dict[str, Any]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from nats_util import NatsServer

    rows: list[dict[str, Any]] = []
    for backend in ("asyncio", "trio"):
        floor = anyio.run(_bare_task_bytes, N_MEMORY, backend=backend)
        used = anyio.run(_worker_bytes, N_MEMORY, backend=backend)
        rows.append(
            {
                "case": f"{backend}: bytes per running Neuron call ({N_MEMORY:,} running)",
                "value": f"{used:,.0f} B (bare anyio task awaiting an event: {floor:,.0f} B; target ≤ 4,096)",
            }
        )
    with NatsServer() as server:
        rows += _scenarios(server.url)
    return rows


def main() -> None:
    print("load (workers on NATS are separate processes on this machine)")
    for row in run():
        print(f"  {row['case']:70} {row['value']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        url, ns, name, limit, sleep_s = sys.argv[2:7]
        anyio.run(_worker_main, url, ns, name, int(limit), float(sleep_s))
    else:
        main()
