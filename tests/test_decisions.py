"""Clarification, permission and escalation loops (§11)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cosmonapse import DecisionTimeout, DendriteProtocolError, NeuronContext, OpCancelled, Signal, SignalType
from cosmonapse.decisions import DecisionCache
from cosmonapse.testing.harness import memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


async def asker(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    """Asks until it is told; then says what it learned."""
    if "clarification" in input:
        return {"learned": input["clarification"]}
    if "escalation" in input:
        return {"handled": input["escalation"]}
    if "permission" in input:
        return {"allowed": input["permission"]}
    if input.get("ask") == "permission":
        return {"__permission__": True, "action": "rm -rf /tmp/x", "scope": "/tmp", "reason": "cleanup"}
    return {"__clarification__": True, "question": "which colour?"}


async def test_discrete_answer_resolves_await_decision_before_and_after_it_arrives() -> None:
    async with memory_cluster(workers={"asker": asker}) as c:
        question = await c.orchestrator.dispatch_and_wait(neuron="asker", input={})
        assert question.type is T.CLARIFICATION
        async with anyio.create_task_group() as tg:
            got: list[Signal] = []

            async def wait() -> None:
                got.append(await c.orchestrator.await_decision(question, timeout_s=5))

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            sent = await c.worker.answer_clarification(question, answer="blue")  # workers may answer
        assert got[0].id == sent.id and got[0].payload == {"answer": "blue"}
        assert sent.parent_id == question.id and sent.trace_id == question.trace_id
        assert sent.neuron == "worker"
        # a late await_decision is served from the cache
        again = await c.orchestrator.await_decision(question, timeout_s=0.01)
        assert again.id == sent.id


async def test_permission_grant_and_deny() -> None:
    async with memory_cluster(workers={"asker": asker}) as c:
        ask = await c.orchestrator.dispatch_and_wait(neuron="asker", input={"ask": "permission"})
        assert ask.type is T.PERMISSION and ask.payload["action"] == "rm -rf /tmp/x"
        got: list[Signal] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:  # a worker subscribes on demand
                got.append(await c.worker.await_decision(ask, timeout_s=5))

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            granted = await c.orchestrator.grant_permission(ask, reason="ok", ttl_ms=1000)
        assert got[0].id == granted.id
        assert got[0].payload == {"granted": True, "reason": "ok", "ttl_ms": 1000}
        ask2 = await c.orchestrator.dispatch_and_wait(neuron="asker", input={"ask": "permission"})
        denied = await c.orchestrator.deny_permission(ask2)
        assert denied.payload == {"granted": False}
        assert (await c.orchestrator.await_decision(ask2, timeout_s=5)).payload == {"granted": False}
        with pytest.raises(ValueError):
            await c.orchestrator.grant_permission(Signal(type=T.CLARIFICATION))


async def test_no_answer_times_out_and_a_stop_cancels_the_wait() -> None:
    async with memory_cluster(workers={"asker": asker}) as c:
        question = await c.orchestrator.dispatch_and_wait(neuron="asker", input={})
        with pytest.raises(DecisionTimeout):
            await c.orchestrator.await_decision(question, timeout_s=0.05)
        failures: list[BaseException] = []

        async def wait() -> None:
            try:
                await c.orchestrator.await_decision(question, timeout_s=5)
            except OpCancelled as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await c.orchestrator.emit_stop(trace_id=question.trace_id)
        assert len(failures) == 1


async def test_respond_by_redispatch_continues_on_the_open_pathway() -> None:
    async with memory_cluster(workers={"asker": asker}) as c:
        pw = await c.orchestrator.dispatch(neuron="asker", input={})
        question = await pw.wait(5)
        task = await c.orchestrator.respond_to_clarification(question, answer="green", extra={"note": 1})
        assert task.trace_id == question.trace_id and task.parent_id == question.id and task.neuron == "asker"
        reply = await pw.wait(5)
        assert reply.payload["output"] == {
            "learned": {"question": "which colour?", "answer": "green", "note": 1}
        }
        ask = await c.orchestrator.dispatch_and_wait(neuron="asker", input={"ask": "permission"})
        pw2 = await c.orchestrator.observe_pathway(ask.trace_id)
        await c.orchestrator.respond_to_permission(ask, granted=False, reason="not today")
        reply2 = await pw2.wait(5)
        assert reply2.payload["output"] == {
            "allowed": {"action": "rm -rf /tmp/x", "granted": False, "reason": "not today"}
        }
        with pytest.raises(DendriteProtocolError):  # re-dispatch creates a TASK: orchestrators only
            await c.worker.respond_to_clarification(question, answer="x")


async def test_respond_to_escalation() -> None:
    async with memory_cluster(workers={"asker": asker}) as c:
        pw = await c.orchestrator.observe_pathway("trc_esc")
        esc = await c.orchestrator.emit_escalation(
            trace_id="trc_esc",
            parent_id=None,
            reason="stuck",
            target="asker",
            context={"k": 1},
            neuron="planner",
        )
        task = await c.orchestrator.respond_to_escalation(esc)
        assert task.neuron == "asker" and task.parent_id == esc.id
        assert task.payload["input"] == {
            "escalation": {"reason": "stuck", "context": {"k": 1}, "from": "planner"}
        }
        await pw.wait_for(T.AGENT_OUTPUT, 5)
        # seed 000: no target -> back to the escalating neuron, same trace, with the override
        untargeted = await c.orchestrator.emit_escalation(
            trace_id="trc_esc", parent_id=None, reason="?", neuron="asker"
        )
        back = await c.orchestrator.respond_to_escalation(untargeted, input={"override": "go"})
        assert (back.neuron, back.trace_id, back.parent_id) == ("asker", "trc_esc", untargeted.id)
        assert back.payload["input"] == {"override": "go"}
        anonymous = Signal(type=T.ESCALATION, trace_id="trc_esc", payload={"reason": "?"})
        with pytest.raises(DendriteProtocolError, match="names no target"):
            await c.orchestrator.respond_to_escalation(anonymous)
        custom = await c.orchestrator.respond_to_escalation(anonymous, neuron="asker", input={"x": 1})
        assert custom.payload["input"] == {"x": 1}


def test_decision_cache_is_bounded_and_first_answer_wins() -> None:
    cache = DecisionCache(size=2)
    answers = [
        Signal(type=T.CLARIFICATION_ANSWER, parent_id=f"evt_{i}", payload={"answer": i}) for i in range(3)
    ]
    for a in answers:
        cache.put(a)
    cache.put(Signal(type=T.CLARIFICATION_ANSWER, parent_id="evt_2", payload={"answer": "late"}))
    wanted = frozenset({T.CLARIFICATION_ANSWER})
    assert len(cache) == 2 and cache.get("evt_0", wanted) is None
    assert cache.get("evt_2", wanted) is answers[2]
    assert cache.get("evt_2", frozenset({T.PERMISSION_DECISION})) is None
