"""The fault suite, bus level (issue 9): real processes, real sockets, real kills.

* a bus (``cosmo synapse start`` and ``nats-server``) SIGKILLed and restarted under
  load: retried calls (``dispatch_and_wait(retry=...)``) all complete; plain
  Signals sent meanwhile are counted — some may be lost (delivery is at most
  once), none is ever delivered twice;
* a worker process SIGKILLed, or SIGSTOPped, in the middle of a TASK: the caller
  gets a clear timeout and the bus keeps serving the others;
* floods and resets: many connections that subscribe to everything and reset,
  garbage lines and a publish flood, while a Dendrite pair keeps working.

Every wait is bounded; nothing sleeps to synchronise.  Run with ``-m faults``.
"""

from __future__ import annotations

import signal
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import Process, SocketAttribute
from bus_kit import NETWORK
from dev_peer import quick_reconnect
from devbus_util import RawClient, cosmo_start, expect_line, peer_process
from nats_util import NatsServer, free_port

from cosmonapse import Dendrite, DispatchTimeout, RetryStrategy, Signal, SignalType, Synapse, connect_synapse
from cosmonapse.synapse.framing import LineReader

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.slow]


@asynccontextmanager
async def worker_process(url: str, ns: str) -> AsyncIterator[tuple[Process, LineReader]]:
    """``dev_peer.py worker`` hosting Axon "echo"; yields once it printed "ready"."""
    async with peer_process("worker", url, ns) as (proc, out):
        try:
            await expect_line(out, "ready")
            yield proc, out
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)  # a frozen one must be able to die


class Bus:
    """A bus process that can be SIGKILLed and restarted on the same address."""

    def __init__(self, kind: str, stack: AsyncExitStack) -> None:
        self.kind = kind
        self._stack = stack
        self._port = free_port()
        self._nats: NatsServer | None = None
        self._proc: Process | None = None
        self.url = ""

    async def start(self) -> None:
        if self.kind == "nats":
            if self._nats is None:
                self._nats = NatsServer(self._port)
                self._stack.callback(self._nats.stop)
            await anyio.to_thread.run_sync(self._nats.start)
            self.url = self._nats.url
        else:
            proc, self.url, _out = await self._stack.enter_async_context(
                cosmo_start("--port", str(self._port))
            )
            self._proc = proc

    async def kill(self) -> None:
        if self._nats is not None:
            await anyio.to_thread.run_sync(self._nats.kill)
        elif self._proc is not None:
            self._proc.kill()
            with anyio.fail_after(10):
                await self._proc.wait()


async def orchestrator(stack: AsyncExitStack, url: str, ns: str) -> tuple[Dendrite, Synapse]:
    syn = await connect_synapse(url, **quick_reconnect(url))
    stack.push_async_callback(syn.close)
    orch = Dendrite(synapse=syn, namespace=ns, dendrite_id="orch", heartbeat_s=0)
    await stack.enter_async_context(orch)
    return orch, syn


async def settle(syn: Synapse) -> None:
    flush = getattr(syn, "flush", None)
    if flush is not None:
        await flush()


class Counter:
    """Receives numbered Signals; counts duplicates, and the marker that ends a run."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.done = anyio.Event()

    async def __call__(self, sig: Signal) -> None:
        n = sig.payload["n"]
        if n < 0:
            self.done.set()
        else:
            self.seen.append(n)


@pytest.mark.parametrize("kind", NETWORK)
async def test_bus_killed_and_restarted_under_load(kind: str, record_property: Any) -> None:
    calls, callers = 120, 6
    ns = "faultkill"
    results: dict[int, Any] = {}
    progress = anyio.Event()
    retry = RetryStrategy(max_attempts=30, timeout_s=1.0, backoff=lambda a: 0.05)
    async with AsyncExitStack() as stack:
        bus = Bus(kind, stack)
        await bus.start()
        await stack.enter_async_context(worker_process(bus.url, ns))
        orch, _orch_syn = await orchestrator(stack, bus.url, ns)
        # Plain Signals on the side, between two more connections: counted, not retried.
        side_pub = await connect_synapse(bus.url, **quick_reconnect(bus.url))
        stack.push_async_callback(side_pub.close)
        side_sub = await connect_synapse(bus.url, **quick_reconnect(bus.url))
        stack.push_async_callback(side_sub.close)
        counter = Counter()
        await side_sub.subscribe(f"cosmonapse.{ns}.AUDIT", counter)
        await settle(side_sub)
        sent = 0
        stop_side = anyio.Event()

        async def side_stream() -> None:
            nonlocal sent
            while not stop_side.is_set():
                try:
                    await side_pub.publish(
                        f"cosmonapse.{ns}.AUDIT", Signal(type=SignalType.AUDIT, payload={"n": sent})
                    )
                    sent += 1
                except Exception:
                    pass  # not sent during the outage (publish_timeout): not counted as sent
                await anyio.sleep(0.005)  # allowed: paces the side stream (load, not synchronisation)

        async def caller(first: int) -> None:
            for n in range(first, calls, callers):
                reply = await orch.dispatch_and_wait(
                    neuron="echo", input={"n": n}, timeout_s=1.0, retry=retry
                )
                results[n] = reply
                if len(results) >= calls // 4:
                    progress.set()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(side_stream)
                async with anyio.create_task_group() as callers_tg:
                    for first in range(callers):
                        callers_tg.start_soon(caller, first)
                    await progress.wait()
                    await bus.kill()  # mid-load: calls and side Signals in flight are cut
                    await bus.start()
                stop_side.set()
            await side_pub.publish(f"cosmonapse.{ns}.AUDIT", Signal(type=SignalType.AUDIT, payload={"n": -1}))
            await counter.done.wait()

    assert sorted(results) == list(range(calls)), "a retried call was lost"
    for n, reply in results.items():
        assert reply.type is SignalType.AGENT_OUTPUT and reply.payload["output"]["echo"] == {"n": n}
    unique = set(counter.seen)
    lost, duplicated = sent - len(unique), len(counter.seen) - len(unique)
    record_property("side_signals_sent", sent)
    record_property("side_signals_lost", lost)
    record_property("side_signals_duplicated", duplicated)
    print(f"{kind}: {sent} side Signals sent across the restart, {lost} lost, {duplicated} duplicated")
    assert duplicated == 0
    assert unique <= set(range(sent))


@asynccontextmanager
async def serving_bus(kind: str) -> AsyncIterator[str]:
    """A bus for the worker tests: the dev bus CLI or a nats-server."""
    async with AsyncExitStack() as stack:
        bus = Bus(kind, stack)
        await bus.start()
        yield bus.url


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
@pytest.mark.parametrize("kind", NETWORK)
async def test_worker_killed_or_frozen_mid_task(kind: str, how: str) -> None:
    ns = f"fault{how.lower()}"
    async with serving_bus(kind) as url, AsyncExitStack() as stack:
        doomed, doomed_out = await stack.enter_async_context(worker_process(url, ns))
        orch, _syn = await orchestrator(stack, url, ns)
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await orch.dispatch_and_wait(neuron="echo", input={"sleep": 60, "tag": "t1"}, timeout_s=2.0)
            except DispatchTimeout as exc:
                outcome.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await expect_line(doomed_out, "started t1")
                doomed.send_signal(getattr(signal, how))
        assert len(outcome) == 1
        message = str(outcome[0])
        assert "no reply from neuron 'echo' within 2.0 s" in message and "trace trc_" in message

        # The bus keeps serving: a fresh worker answers (the frozen one, still subscribed, cannot).
        async with worker_process(url, ns) as (fresh, _out):
            with anyio.fail_after(30):
                reply = await orch.dispatch_and_wait(neuron="echo", input={"n": 1}, timeout_s=10)
            assert reply.payload["output"]["pid"] == fresh.pid
            if how == "SIGSTOP":
                # Traffic keeps flowing past the frozen worker (its backlog is the bus's problem, bounded).
                with anyio.fail_after(60):
                    for n in range(200):
                        reply = await orch.dispatch_and_wait(
                            neuron="echo", input={"n": n, "pad": "x" * 2000}, timeout_s=10
                        )
                        assert reply.payload["output"]["echo"]["n"] == n
                doomed.send_signal(signal.SIGCONT)


def abort(client: RawClient) -> None:
    sock = client.stream.extra(SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_floods_and_resets_against_the_cli_bus() -> None:
    ns = "faultflood"
    async with cosmo_start() as (proc, url, _out), AsyncExitStack() as stack:
        port = int(url.rsplit(":", 1)[1])
        await stack.enter_async_context(worker_process(url, ns))
        orch, _syn = await orchestrator(stack, url, ns)
        done = anyio.Event()
        answered = 0

        async def steady_calls() -> None:
            nonlocal answered
            for n in range(100):
                reply = await orch.dispatch_and_wait(neuron="echo", input={"n": n}, timeout_s=10)
                assert reply.payload["output"]["echo"] == {"n": n}
                answered += 1
            done.set()

        async def resetting_crowd() -> None:
            for _ in range(5):
                crowd = [await RawClient.connect(port) for _ in range(40)]
                for i, c in enumerate(crowd):
                    await c.sub(f"all{i}", ">")
                for c in crowd:
                    abort(c)
                    await c.aclose()

        async def garbage_and_flood() -> None:
            async with await RawClient.connect(port) as rude:
                for i in range(2000):
                    await rude.send_raw(
                        b"\x00not json\xff\n" if i % 3 else b'{"op":"pub","subject":"x.*","frame":"f"}\n'
                    )
                    await rude.pub(f"cosmonapse.{ns}.AUDIT", "y" * 512)
                await rude.send({"op": "ping"})
                errors = 0
                while (answer := await rude.recv(deadline=60)) != {"op": "pong"}:
                    assert answer["op"] == "err"  # one per bad line, and the connection keeps serving
                    errors += 1
                assert errors == 2000

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(steady_calls)
                tg.start_soon(resetting_crowd)
                tg.start_soon(garbage_and_flood)
            await done.wait()
        assert answered == 100
        assert proc.returncode is None  # the bus is still up
        async with await RawClient.connect(port) as fresh:
            await fresh.sync()
