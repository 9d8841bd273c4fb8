"""NATS benchmark: round trips through NatsSynapse (and a Dendrite) beside raw NATS request/reply.

    python -m bench.bench_nats        (or: python -m bench nats)

Starts a ``nats-server`` on a free loopback port.  Every variant runs in one
process and one event loop, requester and responder alike, against the same
server, with the same ~300-byte Signal JSON as payload:

* raw: bare protocol on a socket (PUB with a reply subject, read MSG, echo);
  no parser object, no JSON work, no buffers between tasks;
* NatsSynapse: a requester and an echo responder, each its own connection
  (decode + encode a Signal on each side, the subscription pumps in between);
* Dendrite: ``dispatch_and_wait`` to an echo Axon over NatsSynapse.

Figures are medians measured beside their baseline in the same run; quote ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import SocketStream

from cosmonapse import Axon, Dendrite, NeuronContext, Signal, SignalType, encode_signal
from cosmonapse.synapse.nats import NatsSynapse

SEQ_CALLS = 3000
WARMUP = 300
IN_FLIGHT = 64
ROUNDS_PER_CLIENT = 60

PAYLOAD = encode_signal(
    Signal(type=SignalType.TASK, payload={"input": {"text": "hello bench " * 8}, "finalize": False})
)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- raw NATS: the protocol by hand -------------------------------------------------


class _Raw:
    """One bare connection: just enough protocol for request/reply."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def connect(cls, port: int) -> _Raw:
        raw = cls(await anyio.connect_tcp("127.0.0.1", port))
        await raw.stream.send(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        while b"PONG\r\n" not in raw.buf:
            raw.buf += await raw.stream.receive(65536)
        raw.buf = raw.buf[raw.buf.index(b"PONG\r\n") + 6 :]
        return raw

    async def read_msg(self) -> tuple[bytes, bytes, bytes]:
        """(subject, reply subject or b"", payload) of the next MSG; answers PING on the way."""
        while True:
            eol = self.buf.find(b"\r\n")
            if eol >= 0:
                line = self.buf[:eol]
                if line.startswith(b"MSG "):
                    parts = line.split()
                    end = eol + 2 + int(parts[-1])
                    if len(self.buf) >= end + 2:
                        payload = self.buf[eol + 2 : end]
                        self.buf = self.buf[end + 2 :]
                        return parts[1], (parts[3] if len(parts) == 5 else b""), payload
                else:
                    self.buf = self.buf[eol + 2 :]
                    if line == b"PING":
                        await self.stream.send(b"PONG\r\n")
                    continue
            self.buf += await self.stream.receive(65536)


async def _raw_pair(port: int, fn: Callable[[_Raw], Awaitable[Any]]) -> Any:
    responder = await _Raw.connect(port)
    requester = await _Raw.connect(port)

    async def echo() -> None:
        while True:
            _, reply, payload = await responder.read_msg()
            await responder.stream.send(b"PUB %s %d\r\n%s\r\n" % (reply, len(payload), payload))

    await responder.stream.send(b"SUB raw.echo 1\r\nPING\r\n")
    while b"PONG\r\n" not in responder.buf:
        responder.buf += await responder.stream.receive(65536)
    responder.buf = b""
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(echo)
            result = await fn(requester)
            tg.cancel_scope.cancel()
        return result
    finally:
        await responder.stream.aclose()
        await requester.stream.aclose()


async def _raw_seq(req: _Raw) -> list[float]:
    await req.stream.send(b"SUB _INBOX.raw.* 1\r\n")
    head = b"PUB raw.echo _INBOX.raw.1 %d\r\n" % len(PAYLOAD)
    out: list[float] = []
    for i in range(SEQ_CALLS + WARMUP):
        t0 = time.perf_counter()
        await req.stream.send(head + PAYLOAD + b"\r\n")
        await req.read_msg()
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


async def _raw_inflight(req: _Raw) -> float:
    await req.stream.send(b"SUB _INBOX.raw.* 1\r\n")
    waiters: dict[bytes, anyio.Event] = {}
    lock = anyio.Lock()

    async def reader() -> None:
        while True:
            subject, _, _ = await req.read_msg()
            waiters.pop(subject).set()

    async def client(k: int) -> None:
        inbox = b"_INBOX.raw.%d" % k
        frame = b"PUB raw.echo %s %d\r\n%s\r\n" % (inbox, len(PAYLOAD), PAYLOAD)
        for _ in range(ROUNDS_PER_CLIENT):
            done = waiters[inbox] = anyio.Event()
            async with lock:
                await req.stream.send(frame)
            await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as clients:
            for k in range(IN_FLIGHT):
                clients.start_soon(client, k)
        elapsed = time.perf_counter() - t0
        tg.cancel_scope.cancel()
    return IN_FLIGHT * ROUNDS_PER_CLIENT / elapsed


# -- NatsSynapse: requester and echo responder ------------------------------------------


async def _synapse_pair(url: str, fn: Callable[[NatsSynapse, NatsSynapse], Awaitable[Any]]) -> Any:
    async with NatsSynapse(url) as responder, NatsSynapse(url) as requester:

        async def echo(sig: Signal) -> None:
            await responder.publish(f"syn.rep.{sig.meta['k']}", sig)

        await responder.subscribe("syn.req", echo)
        await responder.flush()
        return await fn(requester, responder)


async def _synapse_seq(req: NatsSynapse, _: NatsSynapse) -> list[float]:
    box: list[anyio.Event] = [anyio.Event()]

    async def on_reply(sig: Signal) -> None:
        box[0].set()

    await req.subscribe("syn.rep.0", on_reply)
    sig = Signal(type=SignalType.TASK, payload={"input": {"text": "hello bench " * 8}}, meta={"k": 0})
    out: list[float] = []
    for i in range(SEQ_CALLS + WARMUP):
        t0 = time.perf_counter()
        box[0] = anyio.Event()
        await req.publish("syn.req", sig)
        await box[0].wait()
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


async def _synapse_inflight(req: NatsSynapse, _: NatsSynapse) -> float:
    waiters: dict[int, anyio.Event] = {}

    async def on_reply(sig: Signal) -> None:
        waiters.pop(sig.meta["k"]).set()

    await req.subscribe("syn.rep.*", on_reply)
    await req.flush()

    async def client(k: int) -> None:
        sig = Signal(type=SignalType.TASK, payload={"input": {"text": "hello bench " * 8}}, meta={"k": k})
        for _ in range(ROUNDS_PER_CLIENT):
            done = waiters[k] = anyio.Event()
            await req.publish("syn.req", sig)
            await done.wait()

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for k in range(IN_FLIGHT):
            tg.start_soon(client, k)
    return IN_FLIGHT * ROUNDS_PER_CLIENT / (time.perf_counter() - t0)


# -- Dendrite over NATS -------------------------------------------------------------------


async def _echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return input


async def _dendrite_pair(url: str, fn: Callable[[Dendrite], Awaitable[Any]]) -> Any:
    async with NatsSynapse(url) as wsyn, NatsSynapse(url) as osyn:
        worker = Dendrite(synapse=wsyn, namespace="bench", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon("echo", _echo))
        orch = Dendrite(synapse=osyn, namespace="bench", heartbeat_s=0, max_concurrent_handlers=4096)
        async with worker, orch:
            await wsyn.flush()
            return await fn(orch)


async def _dendrite_seq(orch: Dendrite) -> list[float]:
    out: list[float] = []
    for i in range(SEQ_CALLS + WARMUP):
        t0 = time.perf_counter()
        await orch.dispatch_and_wait(neuron="echo", input={"text": "hello bench " * 8}, timeout_s=10)
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


async def _dendrite_inflight(orch: Dendrite) -> float:
    async def client() -> None:
        for _ in range(ROUNDS_PER_CLIENT):
            await orch.dispatch_and_wait(neuron="echo", input={"text": "hello bench " * 8}, timeout_s=30)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(client)
    return IN_FLIGHT * ROUNDS_PER_CLIENT / (time.perf_counter() - t0)


# -- driver ------------------------------------------------------------------------------------


async def _measure(port: int) -> dict[str, Any]:
    url = f"nats://127.0.0.1:{port}"
    raw = await _raw_pair(port, _raw_seq)
    syn = await _synapse_pair(url, _synapse_seq)
    den = await _dendrite_pair(url, _dendrite_seq)
    return {
        "raw": raw,
        "syn": syn,
        "den": den,
        "raw_rate": await _raw_pair(port, _raw_inflight),
        "syn_rate": await _synapse_pair(url, _synapse_inflight),
        "den_rate": await _dendrite_pair(url, _dendrite_inflight),
    }


def _rows(backend: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    def row(metric: str, value: float, baseline: float | None = None, target: str = "") -> dict[str, Any]:
        ratio = value / baseline if baseline else None
        return {"backend": backend, "metric": metric, "value": value, "baseline": baseline, "ratio": ratio,
                "target": target}  # fmt: skip

    raw50, raw99 = statistics.median(m["raw"]) * 1e6, _pct(m["raw"], 0.99) * 1e6
    rows = [row("raw NATS request/reply p50 (µs)", raw50), row("raw NATS request/reply p99 (µs)", raw99)]
    for key, label, target in (
        ("syn", "NatsSynapse echo", "≤ 1.1× raw"),
        ("den", "Dendrite dispatch_and_wait", ""),
    ):
        rows.append(row(f"{label} p50 (µs)", statistics.median(m[key]) * 1e6, raw50, target))
        rows.append(row(f"{label} p99 (µs)", _pct(m[key], 0.99) * 1e6, raw99))
    rows.append(row(f"raw {IN_FLIGHT} in flight, round trips/s", m["raw_rate"]))
    for key, label in (("syn_rate", "NatsSynapse"), ("den_rate", "Dendrite")):
        rows.append(row(f"{label} {IN_FLIGHT} in flight, round trips/s", m[key], m["raw_rate"]))
    return rows


def run() -> list[dict[str, Any]]:
    """Start a nats-server, measure on asyncio and trio, stop it; one dict per table row."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from nats_util import NatsServer  # the tests' server helper: one way to start nats-server

    rows: list[dict[str, Any]] = []
    with NatsServer() as server:
        for backend in ("asyncio", "trio"):
            rows += _rows(backend, anyio.run(_measure, server.port, backend=backend))
    return rows


def format_rows(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [title, f"{'backend':8} {'metric':46} {'value':>10} {'baseline':>10} {'ratio':>6}  target"]
    for r in rows:
        base = f"{r['baseline']:10.1f}" if r.get("baseline") is not None else " " * 10
        ratio = f"{r['ratio']:6.2f}" if r.get("ratio") is not None else " " * 6
        lines.append(f"{r['backend']:8} {r['metric']:46} {r['value']:10.1f} {base} {ratio}  {r['target']}")
    return "\n".join(lines)


def main() -> None:
    print(format_rows("NATS (one nats-server on loopback; requester and responder in one process)", run()))


if __name__ == "__main__":
    main()
