"""A Neuron cannot take its host down (issue 9, items 4 and 5, Axon part).

Any ``BaseException`` but the runtime's cancellation becomes ERROR
``NEURON_EXCEPTION`` and the Dendrite keeps serving; outputs that are not plain
JSON become ERROR ``INVALID_OUTPUT`` at once, on every bus alike; a sync Neuron
stuck in its thread is abandoned at STOP and at ``stop()``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import pytest
from bus_kit import KINDS, open_bus, worker_and_orchestrator
from nats_util import Inbox

from cosmonapse import Axon, Dendrite, NeuronContext, SignalType

pytestmark = pytest.mark.anyio


class Custom(BaseException):
    """A BaseException subclass of the user's own."""


RAISED: dict[str, BaseException] = {
    "SystemExit": SystemExit("bye"),
    "KeyboardInterrupt": KeyboardInterrupt("ctrl-c"),
    "GeneratorExit": GeneratorExit("gen"),
    "Custom": Custom("mine"),
    "ValueError": ValueError("plain"),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_base_exceptions_become_error_replies_and_the_host_keeps_serving(
    kind: str, nats_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    slow_started = anyio.Event()
    release_slow = anyio.Event()

    async def raiser(input: dict[str, Any], ctx: NeuronContext) -> Any:
        raise RAISED[input["what"]]

    async def slow(input: dict[str, Any], ctx: NeuronContext) -> Any:
        slow_started.set()
        await release_slow.wait()
        return {"slow": "done"}

    axons = [Axon("raiser", raiser), Axon("slow", slow)]
    async with (
        worker_and_orchestrator(kind, nats_url, "contain", axons) as orch,
        anyio.create_task_group() as tg,
    ):
        slow_reply: list[Any] = []

        async def call_slow() -> None:
            slow_reply.append(await orch.dispatch_and_wait(neuron="slow", input={}, timeout_s=20))

        tg.start_soon(call_slow)
        with anyio.fail_after(10):
            await slow_started.wait()
        with caplog.at_level(logging.ERROR, logger="cosmonapse.axon"):
            for what, exc in RAISED.items():
                with anyio.fail_after(10):
                    reply = await orch.dispatch_and_wait(neuron="raiser", input={"what": what}, timeout_s=20)
                assert reply.type is SignalType.ERROR
                assert reply.payload == {
                    "code": "NEURON_EXCEPTION",
                    "message": f"{type(exc).__name__}: {exc}",
                    "recoverable": False,
                }
                records = [r for r in caplog.records if reply.trace_id in r.getMessage()]
                assert len(records) == 1, [r.getMessage() for r in records]  # logged once
                assert "Traceback" in records[0].getMessage()
        release_slow.set()  # the in-flight TASK was never disturbed
    assert slow_reply[0].payload["output"] == {"slow": "done"}


BAD_OUTPUTS: dict[str, tuple[Any, str]] = {
    "set": ({"tags": {1, 2}}, "output['tags'] is of type set"),
    "bytes": (b"raw", "output is of type bytes"),
    "object": ({"o": [object()]}, "output['o'][0] is of type object"),
    "nan": ({"x": math.nan}, "output['x'] is nan"),
    "inf": ([1.0, math.inf], "output[1] is inf"),
    "-inf": ({"x": {"y": -math.inf}}, "output['x']['y'] is -inf"),
    "big int": ({"n": 2**80}, "output['n'] is an integer out of JSON's 64-bit range"),
    "tuple key": ({(1, 2): "x"}, "output has a key of type tuple"),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_outputs_that_are_not_json_become_invalid_output_at_once(
    kind: str, nats_url: str | None
) -> None:
    async def bad(input: dict[str, Any], ctx: NeuronContext) -> Any:
        return BAD_OUTPUTS[input["what"]][0]

    async def fine(input: dict[str, Any], ctx: NeuronContext) -> Any:
        return {"t": (1, 2), 3: "int key", "f": 1.5, "none": None}

    async with worker_and_orchestrator(
        kind, nats_url, "contain", [Axon("bad", bad), Axon("fine", fine)]
    ) as orch:
        for what, (_value, expected) in BAD_OUTPUTS.items():
            with anyio.fail_after(5):  # at once: no waiting for the caller's timeout
                reply = await orch.dispatch_and_wait(neuron="bad", input={"what": what}, timeout_s=60)
            assert reply.type is SignalType.ERROR, what
            assert reply.payload["code"] == "INVALID_OUTPUT"
            assert expected in reply.payload["message"], reply.payload["message"]
            assert reply.payload["message"].startswith(
                "neuron bad returned an output that cannot go on the wire"
            )
        with anyio.fail_after(5):
            ok = await orch.dispatch_and_wait(neuron="fine", input={}, timeout_s=60)
        assert ok.type is SignalType.AGENT_OUTPUT


class StuckSync:
    """A sync Neuron that blocks its thread until the test lets it go."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = threading.Event()
        self.dropped = threading.Event()

    def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> Any:
        anyio.from_thread.run_sync(self.entered.set)
        self.release.wait(60)
        return {"late": True}


class DroppedLog(logging.Handler):
    """Sets an event when the Axon logs a dropped late result."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "result dropped" in record.getMessage():
            self.event.set()


@asynccontextmanager
async def stuck_axon() -> AsyncIterator[tuple[StuckSync, Axon]]:
    """An Axon around a StuckSync; on the way out its thread is let go and its late result awaited."""
    stuck = StuckSync()
    axon = Axon("stuck", stuck)
    handler = DroppedLog(stuck.dropped)
    logging.getLogger("cosmonapse.axon").addHandler(handler)
    try:
        yield stuck, axon
        stuck.release.set()
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(stuck.dropped.wait, 10)
        assert stuck.dropped.is_set() and axon.late_results == 1  # dropped, logged, counted
    finally:
        stuck.release.set()
        logging.getLogger("cosmonapse.axon").removeHandler(handler)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stuck_sync_neuron_is_abandoned_at_stop(kind: str, nats_url: str | None) -> None:
    async with (
        stuck_axon() as (stuck, axon),
        worker_and_orchestrator(kind, nats_url, "contain", [axon]) as orch,
    ):
        pw = await orch.dispatch(neuron="stuck", input={})
        with anyio.fail_after(10):
            await stuck.entered.wait()
        acks = await orch.stop_trace(pw.trace_id, collect_acks=True, timeout_s=1)
        assert [a.payload["cancelled"] for a in acks if a.payload["node"] == "worker"] == [1]
        assert axon.abandoned_calls == 1


async def test_a_stuck_sync_neuron_does_not_hold_up_dendrite_stop() -> None:
    async with stuck_axon() as (stuck, axon), open_bus("memory") as make, make() as bus:
        worker = Dendrite(
            synapse=bus, namespace="stuck", role="worker", heartbeat_s=0, shutdown_timeout_s=1.0
        )
        worker.attach_axon(axon)
        orch = Dendrite(synapse=bus, namespace="stuck", heartbeat_s=0)
        started, go_stop, stopped = anyio.Event(), anyio.Event(), anyio.Event()

        async def host() -> None:  # the worker's lifetime in a task of its own
            async with worker:
                started.set()
                await go_stop.wait()
            stopped.set()

        async with orch, anyio.create_task_group() as tg:
            tg.start_soon(host)
            with anyio.fail_after(10):
                await started.wait()
            await orch.dispatch_task(neuron="stuck", input={})
            with anyio.fail_after(10):
                await stuck.entered.wait()
            t0 = time.monotonic()
            go_stop.set()
            with anyio.fail_after(10):
                await stopped.wait()
            assert time.monotonic() - t0 < 1.0 + 1.0  # shutdown_timeout_s plus slack
            assert axon.abandoned_calls == 1


async def test_a_neuron_that_swallows_its_cancellation_and_returns_gets_no_reply() -> None:
    entered = anyio.Event()
    returned = anyio.Event()

    async def stubborn(input: dict[str, Any], ctx: NeuronContext) -> Any:
        entered.set()
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.2)  # allowed: a shielded stretch of work the STOP cannot interrupt
        returned.set()
        return {"too": "late"}

    async with worker_and_orchestrator("memory", None, "contain", [Axon("stubborn", stubborn)]) as orch:
        outputs = Inbox()
        await orch.subscribe(SignalType.AGENT_OUTPUT, outputs)
        task = await orch.dispatch_task(neuron="stubborn", input={})
        with anyio.fail_after(10):
            await entered.wait()
        await orch.emit_stop(trace_id=task.trace_id)
        with anyio.fail_after(10):
            await returned.wait()
        reply = await orch.dispatch_and_wait(neuron="stubborn", input={}, timeout_s=10)  # a later one: fine
        assert reply.type is SignalType.AGENT_OUTPUT
        first = await outputs.wait_for(1)  # one pump: a reply of the stopped trace would come first
        assert first[0].trace_id == reply.trace_id
