"""Cross-process benchmark of the cosmo:// dev bus beside a raw 3-process TCP relay.

    python -m bench.bench_dev_bus        (or: python -m bench dev_bus)

Every path is three OS processes: this one (the caller), a broker and a worker.

* raw relay: the least code that does the job, asyncio streams and newline
  framing (client → broker → worker → broker → client); the baseline.
* anyio relay: the same minimal relay written on anyio streams, on asyncio and
  on trio: what the socket layer we build on costs by itself.
* cosmo:// echo: DevSynapse publish → our bus (``cosmo synapse start``) →
  DevSynapse worker that publishes the reply → bus → caller.
* cosmo:// Dendrite: ``dispatch_and_wait`` to a worker Dendrite over the same bus.
* the same Dendrite call with 100 idle observers connected (each with two
  subscriptions that never match the traffic).
* both cosmo:// paths again with every process (bus, worker, caller) on trio.

All figures are measured in the same run as their baseline; quote ratios.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from bench.children import stop_child

ROOT = Path(__file__).resolve().parent.parent
SEQ_CALLS = 2000
WARMUP = 200
IN_FLIGHT = 64
IN_FLIGHT_CALLS = 4000
OBSERVERS = 100
PAYLOAD = {"text": "x" * 200}
RAW_LINE = b"r" * 300 + b"\n"

# -- child processes -----------------------------------------------------------------


@contextmanager
def _child(*args: str, ready: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a child (``python -m ...``), wait for its *ready* line; yields (process, that line)."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{args} exited before it was ready (code {proc.wait()})")
            if ready in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args} not ready within 30 s")
        yield proc, line.strip()
    finally:
        stop_child(proc)


def _role(*args: str, ready: str = "ready") -> Any:
    return _child("-m", "bench.bench_dev_bus", "--role", *args, ready=ready)


@contextmanager
def _bus(*extra: str) -> Iterator[str]:
    with _child("-m", "cosmonapse", "synapse", "start", "memory", "--port", "0", "-n", "bench", *extra,
                ready="listening on") as (_, line):  # fmt: skip
        match = re.search(r"(cosmo://\S+)", line)
        assert match, line
        yield match.group(1)


# -- raw relay (the baseline) --------------------------------------------------------


async def _raw_broker() -> None:
    peers: dict[bytes, asyncio.StreamWriter] = {}
    both = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        role = (await reader.readline()).strip()
        peers[role] = writer
        if len(peers) == 2:
            both.set()
        await both.wait()
        other = peers[b"worker" if role == b"client" else b"client"]
        while line := await reader.readline():
            other.write(line)
            await other.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def _raw_worker(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"worker\n")
    print("ready", flush=True)
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()


async def _raw_client(port: int, window: Any = None) -> tuple[list[float], float]:
    """Sequential latencies, then throughput; *window* (``open()``/``close()``) wraps the latter."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"client\n")
    samples = []
    for i in range(SEQ_CALLS + WARMUP):
        t0 = time.perf_counter()
        writer.write(RAW_LINE)
        await writer.drain()
        await reader.readline()
        if i >= WARMUP:
            samples.append(time.perf_counter() - t0)
    # Throughput with IN_FLIGHT requests outstanding at all times.
    if window is not None:
        window.open()
    t0 = time.perf_counter()
    credit = asyncio.Semaphore(IN_FLIGHT)

    async def send_all() -> None:
        for _ in range(IN_FLIGHT_CALLS):
            await credit.acquire()
            writer.write(RAW_LINE)
            await writer.drain()

    sender = asyncio.ensure_future(send_all())  # bench-only helper, not library code
    for _ in range(IN_FLIGHT_CALLS):
        await reader.readline()
        credit.release()
    await sender
    rate = IN_FLIGHT_CALLS / (time.perf_counter() - t0)
    if window is not None:
        window.close()
    writer.close()
    return samples, rate


def _measure_raw() -> tuple[list[float], float]:
    with _role("raw-broker") as (_, line):
        port = int(line.split()[1])
        with _role("raw-worker", str(port)):
            return asyncio.run(_raw_client(port))


async def _connect(port: int, ours: bool) -> Any:
    """anyio's stream, or ours (``aiostream``: its own class on asyncio, anyio's on trio)."""
    from cosmonapse.synapse.aiostream import connect_tcp

    return await (connect_tcp if ours else anyio.connect_tcp)("127.0.0.1", port)


async def _anyio_broker(ours: bool = False) -> None:
    from cosmonapse.synapse.aiostream import accept
    from cosmonapse.synapse.framing import LineReader

    peers: dict[bytes, Any] = {}
    both = anyio.Event()

    async def handle(stream: Any) -> None:
        lines = LineReader(stream)
        role = await lines.receive_line()
        peers[role] = stream
        if len(peers) == 2:
            both.set()
        await both.wait()
        other = peers[b"worker" if role == b"client" else b"client"]
        try:
            while True:
                await other.send(await lines.receive_line() + b"\n")
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return  # the run is over

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    print(f"ready {listener.extra(anyio.abc.SocketAttribute.local_port)}", flush=True)
    if not ours:
        await listener.serve(handle)
        return
    async with anyio.create_task_group() as tg:
        while True:
            tg.start_soon(handle, await accept(listener.listeners[0]))  # type: ignore[arg-type]


async def _anyio_worker(port: int, ours: bool = False) -> None:
    from cosmonapse.synapse.framing import LineReader

    stream = await _connect(port, ours)
    lines = LineReader(stream)
    await stream.send(b"worker\n")
    print("ready", flush=True)
    try:
        while True:
            await stream.send(await lines.receive_line() + b"\n")
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return


async def _anyio_client(port: int, ours: bool = False) -> tuple[list[float], float]:
    from cosmonapse.synapse.framing import LineReader

    stream = await _connect(port, ours)
    lines = LineReader(stream)
    await stream.send(b"client\n")

    async def call(_i: int) -> None:
        await stream.send(RAW_LINE)
        await lines.receive_line()

    samples, _ = await _timed(call, concurrent=False)
    window = anyio.Semaphore(IN_FLIGHT)
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:

        async def send_all() -> None:
            for _ in range(IN_FLIGHT_CALLS):
                await window.acquire()
                await stream.send(RAW_LINE)

        tg.start_soon(send_all)
        for _ in range(IN_FLIGHT_CALLS):
            await lines.receive_line()
            window.release()
    rate = IN_FLIGHT_CALLS / (time.perf_counter() - t0)
    await stream.aclose()
    return samples, rate


def _measure_anyio_relay(backend: str, ours: bool = False) -> tuple[list[float], float]:
    """The relay on anyio streams, or (*ours*) on ``aiostream``'s: the socket layer's own cost."""
    streams = "ours" if ours else "anyio"
    with _role("anyio-broker", backend, streams) as (_, line):
        port = int(line.split()[1])
        with _role("anyio-worker", str(port), backend, streams):
            return anyio.run(_anyio_client, port, ours, backend=backend)


def _measure_wire_relay(backend: str, handoff: bool = False) -> tuple[list[float], float]:
    """The relay doing the protocol's minimum per message (``bench.wire_relay``); *handoff*:
    and the two task hand-overs our guarantees add (sequential only: the rate is 0)."""
    from bench.wire_relay import wire_client, wire_handoff_client

    with _role("wire-broker", backend) as (_, line):
        port = int(line.split()[1])
        if handoff:
            with _role("wire-worker", str(port), backend, "handoff"):
                return anyio.run(wire_handoff_client, port, backend=backend), 0.0
        with _role("wire-worker", str(port), backend):
            return anyio.run(wire_client, port, backend=backend)


# -- cosmo:// ------------------------------------------------------------------------


async def _echo_worker(url: str) -> None:
    from cosmonapse import Signal, SignalType, connect_synapse

    synapse = await connect_synapse(url)
    try:

        async def reply(sig: Signal) -> None:
            out = Signal(
                type=SignalType.AGENT_OUTPUT, trace_id=sig.trace_id, parent_id=sig.id, payload=sig.payload
            )
            await synapse.publish("cosmonapse.bench.AGENT_OUTPUT", out)

        await synapse.subscribe("cosmonapse.bench.TASK", reply)
        print("ready", flush=True)
        await anyio.sleep_forever()
    finally:
        await synapse.close()


async def _dendrite_worker(url: str, max_tasks: int | None = None) -> None:
    """An echo Axon on a worker Dendrite; *max_tasks* defaults to ``2 × IN_FLIGHT`` of this module (128).

    ``_measure_cosmo`` passes the caller's ``2 × IN_FLIGHT``: a child process never sees the
    sizes a caller patched into this module."""
    from cosmonapse import Axon, Dendrite, connect_synapse

    async def echo(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return input

    synapse = await connect_synapse(url)
    try:
        dendrite = Dendrite(synapse=synapse, namespace="bench", role="worker", dendrite_id="bench-worker",
                            max_concurrent_tasks=max_tasks or IN_FLIGHT * 2)  # fmt: skip
        dendrite.attach_axon(Axon("echo", echo, ["echo"]))
        async with dendrite:
            flush = getattr(synapse, "flush", None)  # NATS: our subscriptions are in place first
            if flush is not None:
                await flush()
            print("ready", flush=True)
            await anyio.sleep_forever()
    finally:
        await synapse.close()


async def _observers(url: str) -> None:
    from cosmonapse.synapse.dev import open_dev_link, parse_cosmo_url

    host, port, token = parse_cosmo_url(url)
    links = [await open_dev_link(host, port, token=token) for _ in range(OBSERVERS)]
    for i, link in enumerate(links):
        await link.send(
            {"op": "sub", "sub_id": f"o{i}", "subject": f"cosmonapse.obs{i}.>", "queue_group": None}
        )
        await link.send(
            {"op": "sub", "sub_id": f"h{i}", "subject": "cosmonapse.bench.STOPPED", "queue_group": None}
        )
        await link.send({"op": "ping"})
    for link in links:
        while (await link.receive()).get("op") != "pong":
            pass
    print("ready", flush=True)
    async with anyio.create_task_group() as tg:
        for link in links:
            tg.start_soon(_drain, link)


async def _drain(link: Any) -> None:
    while True:
        await link.receive()


async def _timed(
    call: Callable[[int], Awaitable[Any]], *, concurrent: bool = True
) -> tuple[list[float], float]:
    """Sequential latencies, then throughput with IN_FLIGHT calls outstanding."""
    samples = []
    for i in range(SEQ_CALLS + WARMUP):
        t0 = time.perf_counter()
        await call(i)
        if i >= WARMUP:
            samples.append(time.perf_counter() - t0)
    if not concurrent:
        return samples, 0.0
    per_caller = IN_FLIGHT_CALLS // IN_FLIGHT

    async def caller() -> None:
        for i in range(per_caller):
            await call(i)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(caller)
    return samples, per_caller * IN_FLIGHT / (time.perf_counter() - t0)


async def _echo_client(url: str) -> tuple[list[float], float]:
    from cosmonapse import Signal, SignalType, connect_synapse, new_trace_id

    synapse = await connect_synapse(url)
    waiting: dict[str, anyio.Event] = {}
    try:

        async def on_reply(sig: Signal) -> None:
            event = waiting.pop(sig.trace_id, None)
            if event is not None:
                event.set()

        await synapse.subscribe("cosmonapse.bench.AGENT_OUTPUT", on_reply)

        async def call(i: int) -> None:
            sig = Signal(type=SignalType.TASK, trace_id=new_trace_id(), payload={"input": PAYLOAD, "i": i})
            event = waiting[sig.trace_id] = anyio.Event()
            await synapse.publish("cosmonapse.bench.TASK", sig)
            with anyio.fail_after(10):
                await event.wait()

        return await _timed(call)
    finally:
        await synapse.close()


async def _dendrite_client(url: str) -> tuple[list[float], float]:
    from cosmonapse import Dendrite, connect_synapse

    synapse = await connect_synapse(url)
    try:
        async with Dendrite(synapse=synapse, namespace="bench", dendrite_id="bench-orch") as orch:

            async def call(i: int) -> None:
                await orch.dispatch_and_wait(neuron="echo", input=PAYLOAD, timeout_s=10)

            return await _timed(call)
    finally:
        await synapse.close()


def _bus_role(backend: str) -> None:
    """The dev bus as ``cosmo synapse start memory -n bench --quiet`` runs it, in a bench role
    (so that ``bench.profiling`` can open a window in it)."""
    import logging

    from cosmonapse.cli.synapse import _serve
    from cosmonapse.synapse.dev_server import DevSynapseServer

    logging.getLogger("cosmonapse").setLevel(logging.ERROR)
    anyio.run(_serve, DevSynapseServer("127.0.0.1", 0), "bench", None, True, backend=backend)


def _measure_cosmo(
    client: Any, worker_role: str, *, observers: bool = False, backend: str = "asyncio"
) -> Any:
    """Bus, worker and caller all on *backend*; a Dendrite worker runs up to 2 × ``IN_FLIGHT``
    TASKs at once (the value in *this* process: a caller that patched it gets a worker to match)."""
    extra = (str(IN_FLIGHT * 2),) if worker_role == "dendrite-worker" else ()
    with _bus("--backend", backend) as url, _role(worker_role, url, backend, *extra):
        if observers:
            with _role("observers", url):
                return anyio.run(client, url, backend=backend)
        return anyio.run(client, url, backend=backend)


# -- report --------------------------------------------------------------------------


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rows(
    name: str, m: tuple[list[float], float], base: tuple[list[float], float] | None, target: str
) -> list[dict[str, Any]]:
    samples, rate = m
    p50, p99 = statistics.median(samples) * 1e6, _pct(samples, 0.99) * 1e6
    rows = [
        {"backend": "asyncio", "metric": f"{name} p50 (µs)", "value": p50, "baseline": None, "ratio": None,
         "target": target},
        {"backend": "asyncio", "metric": f"{name} p99 (µs)", "value": p99, "baseline": None, "ratio": None,
         "target": ""},
        {"backend": "asyncio", "metric": f"{name} {IN_FLIGHT} in flight/s", "value": rate, "baseline": None,
         "ratio": None, "target": ""},
    ]  # fmt: skip
    if not rate:
        rows.pop()
    if base is not None:
        bs, brate = base
        for row, b in zip(rows, (statistics.median(bs) * 1e6, _pct(bs, 0.99) * 1e6, brate), strict=False):
            row["baseline"], row["ratio"] = b, row["value"] / b
    return rows


def run() -> list[dict[str, Any]]:
    raw = _measure_raw()
    relay = {b: _measure_anyio_relay(b) for b in ("asyncio", "trio")}
    echo = _measure_cosmo(_echo_client, "echo-worker")
    dendrite = _measure_cosmo(_dendrite_client, "dendrite-worker")
    crowded = _measure_cosmo(_dendrite_client, "dendrite-worker", observers=True)
    trio_echo = _measure_cosmo(_echo_client, "echo-worker", backend="trio")
    trio_dendrite = _measure_cosmo(_dendrite_client, "dendrite-worker", backend="trio")
    return [
        *_rows("raw relay (asyncio streams)", raw, None, "baseline"),
        *_rows("anyio relay on asyncio", relay["asyncio"], raw, "(socket layer alone)"),
        *_rows("anyio relay on trio", relay["trio"], raw, "(socket layer alone)"),
        *_rows("cosmo:// DevSynapse echo", echo, raw, "≤ 1.5× raw relay"),
        *_rows("cosmo:// dispatch_and_wait", dendrite, raw, "≤ 1.5× raw relay"),
        *_rows(f"… with {OBSERVERS} idle observers", crowded, dendrite, "≤ 2× without"),
        *_rows("cosmo:// echo, all on trio", trio_echo, raw, ""),
        *_rows("cosmo:// dispatch_and_wait, all on trio", trio_dendrite, raw, ""),
    ]


def format_rows(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [title, f"{'metric':56} {'value':>10} {'baseline':>10} {'ratio':>6}  target"]
    for r in rows:
        base = f"{r['baseline']:10.1f}" if r.get("baseline") is not None else " " * 10
        ratio = f"{r['ratio']:6.2f}" if r.get("ratio") is not None else " " * 6
        lines.append(f"{r['metric']:56} {r['value']:10.1f} {base} {ratio}  {r['target']}")
    return "\n".join(lines)


def main() -> None:
    t0 = time.perf_counter()
    rows = run()
    print(
        format_rows(f"dev bus, 3 processes each, {os.cpu_count()} CPUs (ratio: vs the row's baseline)", rows)
    )
    print(f"({time.perf_counter() - t0:.1f} s)")


def _wire(name: str) -> Any:
    from bench import wire_relay

    return getattr(wire_relay, name)


_ROLES: dict[str, Callable[..., Any]] = {
    "raw-broker": lambda: asyncio.run(_raw_broker()),
    "raw-worker": lambda port: asyncio.run(_raw_worker(int(port))),
    "anyio-broker": lambda backend, streams: anyio.run(_anyio_broker, streams == "ours", backend=backend),
    "anyio-worker": lambda port, backend, streams: anyio.run(
        _anyio_worker, int(port), streams == "ours", backend=backend
    ),
    "wire-broker": lambda backend: anyio.run(_wire("wire_broker"), backend=backend),
    "wire-worker": lambda port, backend, handoff="": anyio.run(
        _wire("wire_worker"), int(port), handoff == "handoff", backend=backend
    ),
    "echo-worker": lambda url, backend: anyio.run(_echo_worker, url, backend=backend),
    "dendrite-worker": lambda url, backend, max_tasks="0": anyio.run(
        _dendrite_worker, url, int(max_tasks) or None, backend=backend
    ),
    "bus": _bus_role,
    "observers": lambda url: anyio.run(_observers, url),
}

if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        from bench.profiling import install_from_env

        install_from_env()  # python -m bench profile's window; a no-op otherwise
        try:
            _ROLES[sys.argv[2]](*sys.argv[3:])
        except KeyboardInterrupt:
            pass
    else:
        main()
