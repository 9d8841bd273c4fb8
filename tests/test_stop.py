"""STOP / STOPPED: cancellation, acks, tombstones, role guard (§12)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cosmonapse import (
    Axon,
    Dendrite,
    DendriteProtocolError,
    NeuronContext,
    PathwayClosedError,
    Signal,
    SignalType,
)
from cosmonapse.ops import OpCancelled
from cosmonapse.stops import StopTombstones, TraceStoppedError
from cosmonapse.testing.harness import SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


class Gate:
    """A Neuron that blocks until released and records what happened to it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        key = input.get("key", "?")
        self.started.append(key)
        self.entered.set()
        try:
            if input.get("block", True):
                await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(key)
            raise
        finally:
            self.finished.append(key)
        return {"key": key}


async def test_stop_cancels_the_neuron_and_acks() -> None:
    gate = Gate()
    async with memory_cluster(workers={"gate": gate}) as c:
        pw = await c.orchestrator.dispatch(neuron="gate", input={"key": "a"})
        seen_stop = SignalRecorder()
        pw.on(T.STOP)(seen_stop)
        with anyio.fail_after(5):
            await gate.entered.wait()
        acks = await c.orchestrator.stop_trace(pw.trace_id, reason="enough", collect_acks=True, timeout_s=0.5)
        await seen_stop.wait_for(count=1)
        with pytest.raises(PathwayClosedError):
            await pw.wait(1)
    assert gate.cancelled == ["a"] and gate.finished == ["a"]
    by_node = {a.payload["node"]: a for a in acks}
    assert set(by_node) == {"worker", "orchestrator"}
    worker_ack = by_node["worker"]
    assert worker_ack.payload == {"rolled_back": False, "cancelled": 1, "compensated": 0, "node": "worker"}
    assert by_node["orchestrator"].payload["cancelled"] == 0  # its stake was the open Pathway
    stop = seen_stop.signals[0]
    assert worker_ack.parent_id == stop.id and worker_ack.trace_id == pw.trace_id
    assert stop.payload == {"rollback": False, "reason": "enough"} and stop.directed is None


async def test_stop_and_confirm_answers_with_the_node_that_ran_the_task_not_its_own_ack() -> None:
    """The caller's open Pathway gives it a stake, so its own STOPPED comes back too
    (usually first); the confirmation it waits for is the worker's."""
    gate = Gate()
    async with memory_cluster(workers={"gate": gate}) as c:
        pw = await c.orchestrator.dispatch(neuron="gate", input={"key": "a"})
        with anyio.fail_after(5):
            await gate.entered.wait()
            ack = await c.orchestrator.stop_and_confirm(pw.trace_id, timeout_s=5)
        assert ack is not None and ack.payload["node"] == "worker" and ack.payload["cancelled"] == 1
        assert gate.cancelled == ["a"]


async def test_stop_and_confirm_falls_back_to_its_own_ack_when_only_it_had_a_stake() -> None:
    async with memory_cluster(workers={"gate": Gate()}) as c:
        pw = await c.orchestrator.observe_pathway("trc_only_mine")
        with anyio.fail_after(5):
            ack = await c.orchestrator.stop_and_confirm(pw.trace_id, timeout_s=0.3)
        assert ack is not None and ack.payload["node"] == "orchestrator"


async def test_stopped_trace_never_runs_again() -> None:
    gate = Gate()
    async with memory_cluster(workers={"gate": gate}, worker_kw={"max_concurrent_tasks": 1}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="gate", input={"key": "x", "block": False})
        trace = reply.trace_id
        await c.orchestrator.stop_trace(trace, collect_acks=True, timeout_s=0.2)
        assert c.worker.is_stopped(trace) and c.orchestrator.is_stopped(trace)
        # A late TASK for the stopped trace, published straight on the bus by some peer.
        late = Signal(type=T.TASK, trace_id=trace, payload={"input": {"key": "late", "block": False}})
        late = late.evolve(directed=reply.directed)
        await c.synapse.publish("cosmonapse.test.TASK", late)
        # One runner: had the late TASK run, it would have run before this one.
        after = await c.orchestrator.dispatch_and_wait(neuron="gate", input={"key": "after", "block": False})
        assert after.payload["output"] == {"key": "after"}
        # and the orchestrator refuses to dispatch on it
        with pytest.raises(TraceStoppedError):
            await c.orchestrator.dispatch(neuron="gate", input={}, trace_id=trace)
    assert gate.started == ["x", "after"]


async def test_task_queued_behind_a_full_pool_is_dropped_when_stopped() -> None:
    gate = Gate()
    async with memory_cluster(workers={"gate": gate}, worker_kw={"max_concurrent_tasks": 1}) as c:
        first = await c.orchestrator.dispatch(neuron="gate", input={"key": "first"})
        with anyio.fail_after(5):
            await gate.entered.wait()
        queued = await c.orchestrator.dispatch(neuron="gate", input={"key": "queued"})
        await c.orchestrator.stop_trace(queued.trace_id, collect_acks=True, timeout_s=0.2)
        gate.release.set()
        assert (await first.wait(5)).payload["output"] == {"key": "first"}
        last = await c.orchestrator.dispatch_and_wait(neuron="gate", input={"key": "last"})
        assert last.type is T.AGENT_OUTPUT
    assert gate.started == ["first", "last"]


async def test_duplicate_stop_is_silent_and_harmless() -> None:
    gate = Gate()
    async with memory_cluster(workers={"gate": gate}) as c:
        pw = await c.orchestrator.dispatch(neuron="gate", input={"key": "d"})
        with anyio.fail_after(5):
            await gate.entered.wait()
        first = await c.orchestrator.stop_trace(pw.trace_id, collect_acks=True, timeout_s=0.3)
        again = await c.orchestrator.stop_trace(pw.trace_id, collect_acks=True, timeout_s=0.1)
    assert len(first) == 2
    assert again == []  # nobody has a stake any more
    assert gate.cancelled == ["d"]


async def test_idle_dendrites_stay_silent() -> None:
    async with memory_cluster(workers={"gate": Gate()}) as c:
        acks = await c.orchestrator.stop_trace("trc_" + "0" * 26, collect_acks=True, timeout_s=0.1)
    assert acks == []


async def test_stop_fails_pending_ops_on_the_trace() -> None:
    async with memory_cluster(workers={"gate": Gate()}) as c:
        trace = "trc_" + "1" * 26
        with c.orchestrator._core.ops.open("evt_request", trace, {T.RECALLED}) as op:
            await c.orchestrator.emit_stop(trace_id=trace)
            with pytest.raises(OpCancelled), anyio.fail_after(5):
                await op.next(None)


async def test_stop_is_orchestrator_gated() -> None:
    async with memory_cluster(workers={"gate": Gate()}) as c:
        with pytest.raises(DendriteProtocolError):
            await c.worker.emit_stop(trace_id="trc_x")
        with pytest.raises(DendriteProtocolError):
            await c.worker.stop_trace("trc_x")
        with pytest.raises(DendriteProtocolError):
            await c.worker.emit(Signal(type=T.STOP, payload={"rollback": False}))


async def test_dendrite_stop_cancels_running_neurons() -> None:
    gate = Gate()
    async with memory_cluster() as c:
        worker = Dendrite(synapse=c.synapse, namespace="test", role="worker", dendrite_id="w2")
        worker.attach_axon(Axon(neuron_id="gate", neuron_fn=gate))
        async with worker:
            await c.orchestrator.dispatch(neuron="gate", input={"key": "s"})
            with anyio.fail_after(5):
                await gate.entered.wait()
            await worker.stop()
            assert gate.cancelled == ["s"]


def test_tombstones_are_bounded_in_size_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("cosmonapse.stops.time.monotonic", lambda: now[0])
    stones = StopTombstones(max_entries=3, ttl_s=10)
    assert stones.add("a") and not stones.add("a")
    for t in "bcd":
        stones.add(t)
    assert "a" not in stones and len(stones) == 3  # the oldest went first
    now[0] += 5
    stones.add("e")
    now[0] += 6  # b, c, d are 11 s old; e is 6 s old
    assert "b" not in stones and "e" in stones and len(stones) == 1
    with pytest.raises(ValueError):
        StopTombstones(max_entries=0)
