"""Nothing is published for a trace after its STOP (issue 9, item 5), from any path.

The rule (docs/resilience.md, "After a STOP"):

* what the trace's own work on a Dendrite publishes once the trace is STOPped (or
  its TASK cancelled) is dropped and counted (``DendriteStats.silenced``): a
  Neuron's reply, its NeuronContext's emits (THOUGHT_DELTA, TOOL_CALL, ...) from a
  shielded section or a sync Neuron's thread, a Dendrite emit made from inside it;
* any other publish on a STOPped trace — ``emit()`` and every ``emit_*``,
  answers, ``bid``, ``recall``/``imprint``, ``dispatch*`` — raises
  ``TraceStoppedError`` before anything is sent (a handler racing a STOP gets it);
* STOP itself (idempotent) and STOPPED are the exceptions.

On memory, cosmo:// and NATS, asyncio and trio.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from bus_kit import KINDS
from core_kit import Pair, pair

from cosmonapse import (
    Axon,
    DendriteProtocolError,
    DispatchTimeout,
    NeuronContext,
    Signal,
    SignalType,
    TraceStoppedError,
)
from cosmonapse_sync import SyncDendrite

pytestmark = pytest.mark.anyio
T = SignalType
LATE_TYPES = {T.THOUGHT_DELTA, T.TOOL_CALL, T.TOOL_RESULT, T.PLAN, T.AUDIT, T.AGENT_OUTPUT, T.FINAL}


async def flushed(p: Pair, marker_trace: str) -> None:
    """Everything both Dendrites published so far has reached the recorder: a marker from
    each, and a bus keeps one publisher's Signals in order."""
    for who in (p.worker, p.orch):
        audit = Signal(type=T.AUDIT, trace_id=marker_trace, payload={"marker": True})
        await who.emit(audit)
        await p.seen.wait_for(lambda s, sid=audit.id: any(x.id == sid for x in s))


def stop_seen_by(p: Pair) -> dict[str, anyio.Event]:
    """Per trace, an event set when the worker has handled that trace's STOP."""
    events: dict[str, anyio.Event] = {}

    @p.worker.on_stop
    def seen(sig: Signal) -> None:
        events.setdefault(sig.trace_id, anyio.Event()).set()

    return events


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stopped_neuron_that_keeps_talking_is_silenced(kind: str, nats_url: str | None) -> None:
    started, done = anyio.Event(), anyio.Event()
    holder: dict[str, Any] = {}

    async def chatty(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):  # a cleanup that insists on talking
                await ctx.emit_thought_delta("late")
                await ctx.emit_tool_call("search", {"q": 1})
                await ctx.emit_tool_result("search", result=1)
                await ctx.emit_plan(["more"])
                await holder["worker"].emit(  # through the Dendrite, from inside the TASK
                    Signal(type=T.AUDIT, trace_id=ctx.trace_id, parent_id=ctx.task_id, payload={"k": 1})
                )
                done.set()
        return {"never": True}  # pragma: no cover

    async with pair(kind, nats_url, "silence1", [Axon("chatty", chatty)]) as p:
        holder["worker"] = p.worker
        task = await p.orch.dispatch_task(neuron="chatty", input={}, finalize=True)
        with anyio.fail_after(10):
            await started.wait()
            ack = await p.orch.stop_and_confirm(task.trace_id, timeout_s=10)
            await done.wait()
        assert ack is not None and ack.payload["cancelled"] == 1
        await flushed(p, "trc_" + "M" * 26)
        late = [s.type for s in p.seen.trace(task.trace_id) if s.type in LATE_TYPES]
        assert late == []
        assert p.worker.stats.silenced == 5


@pytest.mark.parametrize("kind", KINDS)
async def test_explicit_publishes_on_a_stopped_trace_raise(kind: str, nats_url: str | None) -> None:
    async def ask(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        return {"__clarification__": True, "question": "which?"}

    async with pair(kind, nats_url, "silence2", [Axon("ask", ask)]) as p:
        orch, worker = p.orch, p.worker
        stopped = stop_seen_by(p)
        question = await orch.dispatch_and_wait(neuron="ask", input={})
        trace = question.trace_id
        await orch.emit_stop(trace_id=trace)
        with anyio.fail_after(10):
            await stopped.setdefault(trace, anyio.Event()).wait()  # the worker has the tombstone too
        await flushed(p, "trc_" + "M" * 26)  # the recorder has the first STOP too (it may lag the worker)
        before = len(p.seen.signals)
        orchestration = {  # a worker may not publish these on any trace (the role guard comes first)
            "emit_final": lambda d: d.emit_final(trace_id=trace, parent_id=None, result=1),
            "emit_thought_delta": lambda d: d.emit_thought_delta(trace_id=trace, parent_id=None, delta="x"),
            "emit": lambda d: d.emit(Signal(type=T.CRITIQUE, trace_id=trace, payload={"verdict": "no"})),
        }
        calls = {
            "emit audit": lambda d: d.emit(Signal(type=T.AUDIT, trace_id=trace, payload={"n": 1})),
            "answer_clarification": lambda d: d.answer_clarification(question, answer="a"),
            "recall": lambda d: d.recall(engram_id="mem", query={}, trace_id=trace),
            "imprint": lambda d: d.imprint(engram_id="mem", op="add", entry={}, trace_id=trace),
        }
        for name, call in [*orchestration.items(), *calls.items()]:
            for who in (orch, worker):
                if who is worker and name in orchestration:
                    with pytest.raises(DendriteProtocolError, match="needs role 'orchestrator'"):
                        await call(who)
                    continue
                with pytest.raises(TraceStoppedError, match=trace):
                    await call(who)
                    pytest.fail(f"{who.dendrite_id}: {name} published on a STOPped trace")
        offer = Signal(type=T.TASK_OFFER, trace_id=trace, payload={"input": {}})
        with pytest.raises(TraceStoppedError):
            await worker.bid(offer, neuron="ask", cost=1.0)
        with pytest.raises(TraceStoppedError):
            await orch.dispatch_and_wait(neuron="ask", input={}, trace_id=trace)
        await orch.emit_stop(trace_id=trace, reason="again")  # STOP stays idempotent and allowed
        await flushed(p, "trc_" + "N" * 26)
        sent = [s.type for s in p.seen.signals[before:] if s.trace_id == trace]
        assert sent == [T.STOP]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_handler_racing_the_stop_gets_trace_stopped_error(kind: str, nats_url: str | None) -> None:
    outcomes: list[BaseException | None] = []
    handled = anyio.Event()

    async with pair(kind, nats_url, "silence3", []) as p:
        trace = "trc_" + "H" * 26

        @p.worker.on_stop
        async def answer(sig: Signal) -> None:  # speaks on the trace it was just told to stop
            try:
                await p.worker.emit(
                    Signal(type=T.AUDIT, trace_id=sig.trace_id, parent_id=sig.id, payload={"stop": sig.id})
                )
                outcomes.append(None)
            except TraceStoppedError as exc:
                outcomes.append(exc)
            handled.set()

        await p.orch.emit_stop(trace_id=trace)
        with anyio.fail_after(10):
            await handled.wait()
        assert len(outcomes) == 1 and isinstance(outcomes[0], TraceStoppedError)
        await flushed(p, "trc_" + "O" * 26)
        assert [s.type for s in p.seen.trace(trace)] == [T.STOP]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_sync_neuron_emitting_from_its_thread_after_stop_is_silenced(backend: str) -> None:
    """Under the facade a plain Neuron runs in a thread; once its TASK is STOPped what it
    emits through its context is dropped (the thread cannot be interrupted)."""
    finished = threading.Event()
    errors: list[BaseException] = []

    def stubborn(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        try:
            assert ctx.cancelled.wait(10), "never cancelled"
            ctx.emit_thought_delta("after the STOP")
            ctx.emit_tool_call("search", {"q": 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            finished.set()
        return {"late": True}

    marker = Signal(type=T.THOUGHT_DELTA, trace_id="trc_" + "P" * 26, payload={"delta": "m"})
    seen: list[Signal] = []
    marker_seen = threading.Event()

    def record(sig: Signal) -> None:
        seen.append(sig)
        if sig.id == marker.id:
            marker_seen.set()

    with SyncDendrite("memory://", backend=backend, namespace="silence4", stop_ack_timeout_s=2.0) as f:
        f.attach_axon(Axon("stubborn", stubborn))
        f.on_thought_delta(record)
        f.on_tool_call(record)
        with pytest.raises(DispatchTimeout):
            f.dispatch_and_wait(neuron="stubborn", input={}, timeout_s=0.2)
        assert finished.wait(10)
        assert not errors
        f.emit(marker)  # after the thread's emits: the handlers see it last
        assert marker_seen.wait(10)
        assert [s.id for s in seen] == [marker.id]
        assert f.stats.silenced == 2
