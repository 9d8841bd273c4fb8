"""The relay doing the protocol's minimum per message: the floor under ``cosmo://``.

The anyio-stream relay of ``bench_dev_bus`` (caller → broker → worker → broker →
caller, one line per message, one ``send`` per line), but every hop does what the
dev bus's wire format forces on it and nothing more:

* the caller builds a TASK Signal (fresh ids and timestamp, directed to ``echo``,
  the same payload as the Dendrite benches) and encodes it (``encode_signal``)
  as the string ``frame`` of a ``pub`` envelope (orjson);
* the broker parses each envelope line (orjson), looks its subject up in a dict
  of subscriptions and writes the ``msg`` envelope as our bus does: the frame
  re-encoded as a JSON string between a prepared head and tail;
* the worker parses the ``msg``, decodes the Signal (``decode_signal``), builds
  the AGENT_OUTPUT reply and encodes it in a ``pub`` envelope;
* the caller parses the ``msg`` and decodes the reply Signal.

Sockets are our buses' own (``cosmonapse.synapse.aiostream``: its protocol-based
stream on asyncio, anyio's on trio).  Left out, because the wire does not force
them: wildcard subject matching, bounded outboxes and writer tasks, backpressure,
per-trace routing, runners, Pathways, deadlines.  Roles run with
``python -m bench.bench_dev_bus --role wire-broker|wire-worker``.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.abc
import orjson

from cosmonapse import Directed, Signal, SignalType, decode_signal, encode_signal, new_trace_id
from cosmonapse.synapse.aiostream import accept, connect_tcp
from cosmonapse.synapse.framing import LineReader

__all__ = ["task_signal", "wire_broker", "wire_client", "wire_handoff_client", "wire_worker"]

TASK = "cosmonapse.bench.TASK"
REPLY = "cosmonapse.bench.AGENT_OUTPUT"
PAYLOAD = {"text": "x" * 200}
_ECHO = Directed(id="echo")
_NL = orjson.OPT_APPEND_NEWLINE


def _pub(subject: str, sig: Signal) -> bytes:
    return orjson.dumps({"op": "pub", "subject": subject, "frame": encode_signal(sig).decode()}, option=_NL)


async def _subscribe(stream: anyio.abc.SocketStream, lines: LineReader, subject: str) -> None:
    """Subscribe, then wait for the broker's pong: the subscription is in place before any traffic."""
    sub = {"op": "sub", "sub_id": "s1", "subject": subject, "queue_group": None}
    await stream.send(orjson.dumps(sub, option=_NL) + b'{"op":"ping"}\n')
    with anyio.fail_after(10):
        while orjson.loads(await lines.receive_line()).get("op") != "pong":
            pass


async def wire_broker() -> None:
    subs: dict[str, tuple[anyio.abc.SocketStream, bytes]] = {}

    async def handle(stream: anyio.abc.SocketStream) -> None:
        lines = LineReader(stream)
        try:
            while True:
                msg = orjson.loads(await lines.receive_line())
                op = msg["op"]
                if op == "pub":
                    target = subs.get(msg["subject"])
                    if target is not None:
                        peer, tail = target
                        head = b'{"op":"msg","subject":' + orjson.dumps(msg["subject"]) + b',"frame":'
                        await peer.send(head + orjson.dumps(msg["frame"]) + tail)
                elif op == "sub":
                    subs[msg["subject"]] = (stream, b',"sub_id":' + orjson.dumps(msg["sub_id"]) + b"}\n")
                elif op == "ping":
                    await stream.send(b'{"op":"pong"}\n')
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return  # the run is over

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    print(f"ready {listener.extra(anyio.abc.SocketAttribute.local_port)}", flush=True)
    async with anyio.create_task_group() as tg:  # our buses' socket layer (aiostream), as our bus has
        while True:
            tg.start_soon(handle, await accept(listener.listeners[0]))  # type: ignore[arg-type]


def _answer(task: Signal) -> bytes:
    reply = Signal(type=SignalType.AGENT_OUTPUT, trace_id=task.trace_id, parent_id=task.id,
                   directed=task.directed, payload={"output": task.payload["input"]})  # fmt: skip
    return _pub(REPLY, reply)


class _Slot:
    """One hand-over between two tasks: the least a reader that must not run the work needs."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.item: Any = None

    def put(self, item: Any) -> None:
        self.item = item
        self.event.set()

    async def take(self) -> Any:
        await self.event.wait()
        self.event = anyio.Event()
        return self.item


async def wire_worker(port: int, handoff: bool = False) -> None:
    """Decode each TASK and answer it; *handoff*: the reader hands each TASK to another task
    (one runner, over one slot) that answers it, as a reader that must keep reading does."""
    stream = await connect_tcp("127.0.0.1", port)
    lines = LineReader(stream)
    await _subscribe(stream, lines, TASK)
    print("ready", flush=True)
    try:
        if not handoff:
            while True:
                await stream.send(_answer(decode_signal(orjson.loads(await lines.receive_line())["frame"])))
        pending: list[Signal] = []
        ready = _Slot()

        async def runner() -> None:
            while True:
                await ready.take()
                while pending:
                    await stream.send(_answer(pending.pop(0)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(runner)
            while True:
                pending.append(decode_signal(orjson.loads(await lines.receive_line())["frame"]))
                ready.put(None)
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return


def task_signal() -> Signal:
    """The TASK a caller builds per call (fresh ids and timestamp, directed to ``echo``)."""
    return Signal(type=SignalType.TASK, trace_id=new_trace_id(), directed=_ECHO, payload={"input": PAYLOAD})


def _task_line() -> bytes:
    return _pub(TASK, task_signal())


def _reply(line: bytes) -> Signal:
    return decode_signal(orjson.loads(line)["frame"])


async def wire_handoff_client(port: int) -> list[float]:
    """Sequential latencies with a reader task that hands each reply to the waiting caller."""
    from bench import bench_dev_bus

    stream = await connect_tcp("127.0.0.1", port)
    lines = LineReader(stream)
    await _subscribe(stream, lines, REPLY)
    replies = _Slot()

    async def reader() -> None:
        while True:
            replies.put(_reply(await lines.receive_line()))

    async def call(_i: int) -> None:
        await stream.send(_task_line())
        await replies.take()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        with anyio.fail_after(120):
            samples, _ = await bench_dev_bus._timed(call, concurrent=False)
        tg.cancel_scope.cancel()
    await stream.aclose()
    return samples


async def wire_client(port: int, window: Any = None) -> tuple[list[float], float]:
    """Sequential latencies, then round trips/s with ``bench_dev_bus.IN_FLIGHT`` outstanding.

    *window* (optional, with ``open()`` / ``close()``) is opened around the in-flight part.
    """
    from bench import bench_dev_bus

    stream = await connect_tcp("127.0.0.1", port)
    lines = LineReader(stream)
    await _subscribe(stream, lines, REPLY)

    async def call(_i: int) -> None:
        await stream.send(_task_line())
        _reply(await lines.receive_line())

    with anyio.fail_after(120):
        samples, _ = await bench_dev_bus._timed(call, concurrent=False)
    calls, in_flight = bench_dev_bus.IN_FLIGHT_CALLS, bench_dev_bus.IN_FLIGHT
    credit = anyio.Semaphore(in_flight)
    if window is not None:
        window.open()
    t0 = time.perf_counter()
    with anyio.fail_after(120):  # a lost reply fails the run instead of hanging it
        async with anyio.create_task_group() as tg:

            async def send_all() -> None:
                for _ in range(calls):
                    await credit.acquire()
                    await stream.send(_task_line())

            tg.start_soon(send_all)
            for _ in range(calls):
                _reply(await lines.receive_line())
                credit.release()
    rate = calls / (time.perf_counter() - t0)
    if window is not None:
        window.close()
    await stream.aclose()
    return samples, rate
