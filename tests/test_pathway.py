"""Pathway: wait / wait_for / on / iteration / close, scopes, roles, auto-close and overflow."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cosmonapse import (
    Axon,
    Dendrite,
    MemorySynapse,
    NeuronContext,
    PathwayBusyError,
    PathwayClosedError,
    PathwayTimeout,
    Signal,
    SignalType,
)
from cosmonapse.testing.harness import memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


async def planner(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    for i in range(input.get("deltas", 0)):
        await context.emit_thought_delta(f"t{i}")
    await context.emit_plan(["step"])
    if input.get("ask"):
        return {"__clarification__": True, "question": "which?"}
    return {"plan": "done"}


async def test_wait_and_wait_for_share_one_queue() -> None:
    async with memory_cluster(workers={"p": planner}) as c:
        pw = await c.orchestrator.dispatch(neuron="p", input={"deltas": 2})
        reply = await pw.wait(5)  # skips THOUGHT_DELTA/PLAN, returns the reply
        plan = await pw.wait_for(T.PLAN, 5)  # still buffered for a later wait_for
        first_delta = await pw.wait_for(T.THOUGHT_DELTA, 5)
        assert reply.type is T.AGENT_OUTPUT and plan.type is T.PLAN
        assert first_delta.payload["delta"] == "t0"
        assert not pw.closed  # AGENT_OUTPUT does not close
        await pw.close()
        await pw.close()  # idempotent
        assert (await pw.wait_for(T.THOUGHT_DELTA, 5)).payload["delta"] == "t1"  # served after close
        with pytest.raises(PathwayClosedError):
            await pw.wait(5)


async def test_terminal_scope_buffers_only_terminal_types_but_callbacks_see_all() -> None:
    async with memory_cluster(workers={"p": planner}) as c:
        pw = await c.orchestrator.dispatch(neuron="p", input={"deltas": 3}, scope="terminal")
        deltas: list[Signal] = []
        pw.on(T.THOUGHT_DELTA)(deltas.append)
        got = [sig async for sig in pw]
        assert [s.type for s in got] == [T.FINAL]  # finalize defaulted on, AGENT_OUTPUT filtered
        assert pw.closed and pw.scope == "terminal" and pw.role == "originator"
    assert len(deltas) == 3  # callbacks ran (as tasks) before the Dendrite stopped


async def test_clarification_is_in_wait_set_but_does_not_close() -> None:
    async with memory_cluster(workers={"p": planner}) as c:
        pw = await c.orchestrator.dispatch(neuron="p", input={"ask": True})
        sig = await pw.wait(5)
        assert sig.type is T.CLARIFICATION and not pw.closed
        await pw.close()


async def test_error_and_final_auto_close() -> None:
    async def fail(input: dict[str, Any], context: NeuronContext) -> Any:
        raise RuntimeError("x")

    async with memory_cluster(workers={"f": fail}) as c:
        pw = await c.orchestrator.dispatch(neuron="f", input={})
        assert (await pw.wait(5)).type is T.ERROR
        assert pw.closed
        assert c.orchestrator.open_pathways() == []
        with pytest.raises(PathwayClosedError):
            await pw.wait_for(T.PLAN, 5)


async def test_wait_timeout_names_trace() -> None:
    async with memory_cluster() as c:
        pw = await c.orchestrator.dispatch(neuron="nobody", input={})
        with pytest.raises(PathwayTimeout, match=pw.trace_id):
            await pw.wait(0.01)
        with pytest.raises(TimeoutError, match="PLAN"):
            await pw.wait_for(T.PLAN, 0.01)
        await pw.close()


async def test_observer_sees_a_trace_another_dendrite_started() -> None:
    async with memory_cluster(workers={"p": planner}) as c:
        watcher = Dendrite(synapse=c.synapse, namespace="test", dendrite_id="watcher")
        async with watcher:
            trace = "trc_01JWATCHEDTRACE0000000000"
            async with await watcher.observe_pathway(trace) as obs:
                assert obs.role == "observer"
                await c.orchestrator.dispatch_and_wait(neuron="p", input={}, trace_id=trace, scope="terminal")
                types = [s.type async for s in obs]
            assert types == [T.PLAN, T.AGENT_OUTPUT, T.FINAL]


async def test_dispatching_twice_on_one_trace_is_refused_until_closed() -> None:
    async with memory_cluster(workers={"p": planner}) as c:
        pw = await c.orchestrator.dispatch(neuron="p", input={}, trace_id="trc_same")
        with pytest.raises(PathwayBusyError, match="trc_same"):
            await c.orchestrator.dispatch(neuron="p", input={}, trace_id="trc_same")
        # a follow-up TASK on the same trace is fine, and an observer may join
        await c.orchestrator.dispatch_task(neuron="p", input={}, trace_id="trc_same")
        obs = await c.orchestrator.observe_pathway("trc_same")
        await pw.close()
        again = await c.orchestrator.dispatch(neuron="p", input={}, trace_id="trc_same")
        assert (await again.wait(5)).type is T.AGENT_OUTPUT
        await again.close()
        await obs.close()


async def test_dispatch_and_wait_on_a_busy_trace_is_refused_before_its_task_goes_out() -> None:
    """dispatch_and_wait opens its Pathway after the TASK is written; the refusal still comes first."""
    runs: list[str] = []

    async def counting(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        runs.append(context.task.id)
        return {"ok": True}

    async with memory_cluster(workers={"c": counting}) as c:
        pw = await c.orchestrator.dispatch(neuron="c", input={}, trace_id="trc_busy")
        assert (await pw.wait(5)).type is T.AGENT_OUTPUT
        with pytest.raises(PathwayBusyError, match="trc_busy"):
            await c.orchestrator.dispatch_and_wait(neuron="c", input={}, trace_id="trc_busy", timeout_s=5)
        follow = await c.orchestrator.dispatch_task(neuron="c", input={}, trace_id="trc_busy")
        with anyio.fail_after(5):
            while (await pw.wait(5)).parent_id != follow.id:
                pass
        assert pw.task is not None
        assert runs == [pw.task.id, follow.id]  # the refused call sent nothing
        await pw.close()


async def test_overflow_drops_oldest_non_reply_signals_never_the_reply() -> None:
    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="o", role="worker")
        worker.attach_axon(Axon(neuron_id="p", neuron_fn=planner))
        orch = Dendrite(synapse=syn, namespace="o", pathway_buffer=8)
        async with worker, orch:
            pw = await orch.dispatch(neuron="p", input={"deltas": 50})
            reply = await pw.wait(5)
            assert reply.type is T.AGENT_OUTPUT
            rest = []
            await pw.close()
            async for sig in pw:
                rest.append(sig)
    assert pw.dropped == 50 + 1 + 1 - 8  # 50 deltas + PLAN + reply, 8 kept
    assert len(rest) == 7
    assert rest[-1].type is T.PLAN  # newest kept


async def test_close_wakes_a_blocked_reader() -> None:
    async with memory_cluster() as c:
        pw = await c.orchestrator.observe_pathway("trc_idle")
        result: list[str] = []

        async def reader() -> None:
            try:
                await pw.wait()
            except PathwayClosedError:
                result.append("closed")

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            await pw.close()
        assert result == ["closed"]


async def test_stopping_the_dendrite_closes_its_pathways() -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="c")
        async with orch:
            pw = await orch.observe_pathway("trc_x")
        assert pw.closed
        with pytest.raises(PathwayClosedError):
            await pw.wait(1)
