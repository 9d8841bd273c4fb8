"""Every ``on_*`` decorator, its filters, ``on_trace``, ``subscribe`` and the deprecated aliases."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cosmonapse import Axon, Dendrite, Directed, MemorySynapse, NeuronContext, Signal, SignalType
from cosmonapse.handlers import DECORATOR_TYPES, DEPRECATED_ALIASES
from cosmonapse.subjects import signal_subject
from cosmonapse.testing.harness import SignalRecorder, assert_no_leaked_tasks

pytestmark = pytest.mark.anyio
T = SignalType


async def echo(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    return input


def test_every_signal_type_has_a_named_decorator() -> None:
    assert set(DECORATOR_TYPES.values()) == set(SignalType)


@pytest.mark.parametrize("role", ["orchestrator", "worker"])
async def test_every_named_decorator_fires(role: str) -> None:
    async with assert_no_leaked_tasks(), MemorySynapse() as syn:
        d = Dendrite(synapse=syn, namespace="h", role=role, heartbeat_s=0)
        seen: dict[str, SignalRecorder] = {}
        for name in DECORATOR_TYPES:
            seen[name] = SignalRecorder()
            getattr(d, name)(seen[name])  # bare form
        async with d:
            published: dict[SignalType, str] = {}
            for stype in DECORATOR_TYPES.values():
                sig = Signal(type=stype, directed=Directed("n1"), payload={"capabilities": ["c"]})
                published[stype] = sig.id
                await syn.publish(signal_subject("h", sig), sig)
            for name, stype in DECORATOR_TYPES.items():
                got = await seen[name].wait_for(lambda sigs, i=published[stype]: any(s.id == i for s in sigs))
                assert {s.type for s in got} == {stype}, name
                # its own DISCOVER at start (it has presence handlers) is the one other Signal it may see
                others = [s for s in got if s.id != published[stype]]
                assert len(got) - len(others) == 1, name
                assert all(s.type is SignalType.DISCOVER for s in others), name


async def test_filters_neuron_capability_trace() -> None:
    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="f", role="worker")
        worker.attach_axon(Axon(neuron_id="w1", neuron_fn=echo, capabilities=["text"]))
        worker.attach_axon(Axon(neuron_id="w2", neuron_fn=echo, capabilities=["math"]))
        orch = Dendrite(synapse=syn, namespace="f")
        by_neuron, by_cap, by_trace, everything = (SignalRecorder() for _ in range(4))
        orch.on_agent_output(neuron="w1")(by_neuron)
        orch.on_agent_output(capability="math")(by_cap)
        orch.on_agent_output(everything)
        async with orch, worker:  # starts after orch: orch learns capabilities from REGISTER
            r1 = await orch.dispatch_and_wait(neuron="w1", input={}, timeout_s=5)
            orch.on_agent_output(trace_id="trc_later")(by_trace)
            r2 = await orch.dispatch_and_wait(neuron="w2", input={}, timeout_s=5)
            await orch.dispatch_and_wait(neuron="w2", input={}, trace_id="trc_later", timeout_s=5)
            await everything.wait_for(count=3)
            await by_trace.wait_for(count=1)
    assert [s.id for s in by_neuron.signals] == [r1.id]
    assert r2.id in [s.id for s in by_cap.signals] and r1.id not in [s.id for s in by_cap.signals]
    assert [s.trace_id for s in by_trace.signals] == ["trc_later"]


async def test_on_trace_all_types_and_selected_types() -> None:
    async def chatty(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        await context.emit_thought_delta("hm")
        return {"ok": True}

    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="o", role="worker")
        worker.attach_axon(Axon(neuron_id="c", neuron_fn=chatty))
        orch = Dendrite(synapse=syn, namespace="o")
        everything, only_output = SignalRecorder(), SignalRecorder()
        orch.on_trace("trc_one")(everything)
        orch.on_trace("trc_one", T.AGENT_OUTPUT)(only_output)
        async with worker, orch:
            await orch.dispatch_and_wait(neuron="c", input={}, trace_id="trc_one", timeout_s=5)
            await orch.dispatch_and_wait(neuron="c", input={}, timeout_s=5)  # another trace: ignored
            await everything.wait_for(lambda s: {x.type for x in s} >= {T.THOUGHT_DELTA, T.AGENT_OUTPUT})
            await only_output.wait_for()
    assert {s.trace_id for s in everything.signals} == {"trc_one"}
    assert T.TASK in {s.type for s in everything.signals}  # on_trace sees the TASK too
    assert [s.type for s in only_output.signals] == [T.AGENT_OUTPUT]


async def test_sync_handlers_and_raising_handlers() -> None:
    calls: list[str] = []
    done = anyio.Event()
    async with MemorySynapse() as syn:
        d = Dendrite(synapse=syn, namespace="s")

        @d.on_plan
        def sync_handler(sig: Signal) -> None:
            calls.append("sync")

        @d.on_plan
        async def raising(sig: Signal) -> None:
            raise RuntimeError("handler bug")

        @d.on_final
        async def after(sig: Signal) -> None:
            done.set()

        async with d:
            await d.emit_plan(trace_id="trc_1", parent_id=None, steps=[1])
            await d.emit_final(trace_id="trc_1", parent_id=None, result={})
            with anyio.fail_after(5):
                await done.wait()
    assert calls == ["sync"]


async def test_deprecated_aliases_warn_and_work() -> None:
    d = Dendrite(synapse=MemorySynapse())
    for alias, target in DEPRECATED_ALIASES.items():
        with pytest.warns(DeprecationWarning, match=target):
            getattr(d, alias)(lambda sig: None)
        with pytest.warns(DeprecationWarning):
            getattr(d, alias)(neuron="x")(lambda sig: None)


async def test_raw_subscribe_and_unsubscribe() -> None:
    async with MemorySynapse() as syn:
        d = Dendrite(synapse=syn, namespace="r")
        rec = SignalRecorder()
        async with d:
            sub = await d.subscribe(T.CONSENSUS, rec)
            await d.emit_consensus(trace_id="trc_1", parent_id=None, members=["a"], verdict="yes")
            await rec.wait_for()
            await d.unsubscribe(sub)
            await d.emit_consensus(trace_id="trc_2", parent_id=None, members=["a"], verdict="no")
            await d.emit_final(trace_id="trc_2", parent_id=None, result={})
        assert [s.payload["verdict"] for s in rec.signals] == ["yes"]


async def test_emitters_payload_shapes_and_attribution() -> None:
    async with MemorySynapse() as syn:
        d = Dendrite(synapse=syn, namespace="e", dendrite_id="boss")
        rec = SignalRecorder()
        d.on_signal(T.CRITIQUE, rec)
        d.on_signal(T.ESCALATION, rec)
        d.on_signal(T.CONTEXT_SYNC, rec)
        d.on_signal(T.MEMORY_APPEND, rec)
        d.on_signal(T.TOOL_RESULT, rec)
        d.on_signal(T.ERROR, rec)
        async with d:
            await d.emit_critique(
                trace_id="trc_1", parent_id=None, target_event_id="evt_1", issues=[], verdict="ok"
            )
            await d.emit_escalation(trace_id="trc_1", parent_id=None, reason="stuck", target="human")
            await d.emit_context_sync(trace_id="trc_1", parent_id=None, snapshot={"a": 1})
            await d.emit_memory_append(trace_id="trc_1", parent_id=None, key="k", value=[1])
            await d.emit_tool_result(trace_id="trc_1", parent_id=None, tool="t", error="boom", neuron="eff")
            await d.emit_error(trace_id="trc_2", parent_id=None, code="X", message="m", recoverable=True)
            await rec.wait_for(count=6)
    by_type = {s.type: s for s in rec.signals}
    assert by_type[T.CRITIQUE].payload == {"target_event_id": "evt_1", "issues": [], "verdict": "ok"}
    assert by_type[T.ESCALATION].payload == {"reason": "stuck", "target": "human"}
    assert by_type[T.CONTEXT_SYNC].payload == {"snapshot": {"a": 1}}
    assert by_type[T.MEMORY_APPEND].payload == {"key": "k", "value": [1]}
    assert by_type[T.TOOL_RESULT].payload == {"tool": "t", "tool_name": "t", "error": "boom"}
    assert by_type[T.TOOL_RESULT].directed == Directed("eff")
    assert by_type[T.ERROR].payload == {"code": "X", "message": "m", "recoverable": True}
    assert by_type[T.CRITIQUE].directed == Directed("boss")
