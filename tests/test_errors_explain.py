"""Errors that explain (issue 11, item 5): say what went wrong, at once, in the user's words.

(A Neuron's exception logged at ERROR with its traceback and trace id, once, on
every bus: ``test_axon_containment.py``.)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio
import pytest

from cosmonapse import (
    Axon,
    Dendrite,
    DendriteProtocolError,
    DispatchTimeout,
    MemorySynapse,
    NeuronContext,
    RetryStrategy,
    Signal,
    SignalDecodeError,
    SignalType,
)
from cosmonapse.testing.harness import SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


async def echo(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    return dict(input)


async def test_a_timeout_says_no_such_neuron_was_heard_of_and_who_was() -> None:
    async with memory_cluster(axons=[Axon("echo", echo, capabilities=["chat"])]) as c:
        with pytest.raises(DispatchTimeout) as info:
            await c.orchestrator.dispatch_and_wait(neuron="ghost", input={}, timeout_s=0.2)
        message = str(info.value)
        assert "neuron 'ghost'" in message and "trc_" in message
        assert "heard no REGISTER from neuron 'ghost' on namespace 'test'" in message
        assert "heard from: echo ['chat']" in message
        with pytest.raises(
            DispatchTimeout, match=r"heard no REGISTER from a neuron with capabilities \['vision'\]"
        ):
            await c.orchestrator.dispatch_and_wait(capabilities=["vision"], input={}, timeout_s=0.2)


async def test_a_timeout_from_a_known_neuron_does_not_blame_registration() -> None:
    slow_done = anyio.Event()

    async def slow(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        await slow_done.wait()
        return {}

    async with memory_cluster(axons=[Axon("slow", slow, capabilities=["chat"])]) as c:
        with pytest.raises(DispatchTimeout) as info:
            await c.orchestrator.dispatch_and_wait(neuron="slow", input={}, timeout_s=0.2)
        assert "REGISTER" not in str(info.value)
        with pytest.raises(DispatchTimeout) as info:
            await c.orchestrator.dispatch_and_wait(capabilities=["chat"], input={}, timeout_s=0.2)
        assert "REGISTER" not in str(info.value)
        slow_done.set()


async def test_a_timeout_with_nobody_on_the_bus_says_so() -> None:
    async with MemorySynapse() as syn, Dendrite(synapse=syn, namespace="empty") as orch:
        with pytest.raises(DispatchTimeout, match=r"nor from any other \(is a worker running"):
            await orch.dispatch_and_wait(neuron="worker", input={}, timeout_s=0.1)


async def test_misuse_is_one_error_type_that_ported_code_catches_either_way() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        orch, worker = c.orchestrator, c.worker
        misuses = [
            worker.dispatch_task(neuron="echo", input={}),  # role
            worker.emit_final(trace_id="trc_1", parent_id=None, result={}),  # role (seeds 001/004)
            orch.emit(Signal(type=T.REGISTER)),  # type guard
            orch.dispatch_task(input={}),  # no target (seed 004)
            orch.respond_to_clarification(Signal(type=T.PLAN), answer="x"),  # wrong request
            orch.bid(Signal(type=T.PLAN), neuron="echo", cost=1.0),  # wrong request
            orch.await_decision(Signal(type=T.AGENT_OUTPUT)),  # wrong request
        ]
        for misuse in misuses:
            with pytest.raises(DendriteProtocolError) as info:
                await misuse
            assert isinstance(info.value, ValueError)


async def test_await_decision_refuses_a_signal_nothing_answers_at_once() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="echo", input={"a": 1})
        with anyio.fail_after(1):  # not its 30 s timeout
            with pytest.raises(
                DendriteProtocolError, match="CLARIFICATION or PERMISSION, not a AGENT_OUTPUT"
            ):
                await c.orchestrator.await_decision(reply, timeout_s=30)


def test_a_signal_type_is_checked_when_the_signal_is_built() -> None:
    with pytest.raises(SignalDecodeError, match="field 'type': 'NOT_A_TYPE' is not a Signal type") as info:
        Signal(type="NOT_A_TYPE")  # type: ignore[arg-type]
    assert info.value.field == "type" and isinstance(info.value, ValueError)
    assert Signal(type="TASK").type is T.TASK  # type: ignore[arg-type]  # a name is fine
    assert Signal(type=T.TASK).evolve(type="PLAN").type is T.PLAN


async def test_retry_that_is_not_a_strategy_is_a_type_error_saying_so() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        for call in (c.orchestrator.dispatch_and_wait, c.orchestrator.run_with_retry):
            with pytest.raises(TypeError, match=r"retry= takes a RetryStrategy, not int 3.*max_attempts=3"):
                await call(neuron="echo", input={}, retry=3)  # type: ignore[arg-type]
        reply = await c.orchestrator.dispatch_and_wait(
            neuron="echo", input={"a": 1}, retry=RetryStrategy(max_attempts=2)
        )
        assert reply.type is T.AGENT_OUTPUT


async def test_a_plain_handler_given_to_synapse_subscribe_runs_in_a_worker_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    got: list[str] = []
    all_in = threading.Event()
    async with MemorySynapse() as syn:

        def plain(sig: Signal) -> None:  # blocking code: it must not run on the event loop
            threads.append(threading.get_ident())
            got.append(sig.id)
            if len(got) == 20:
                all_in.set()

        with caplog.at_level(logging.ERROR):
            sub = await syn.subscribe("cosmonapse.raw.PLAN", plain)
            sent = [Signal(type=T.PLAN) for _ in range(20)]
            for sig in sent:
                await syn.publish("cosmonapse.raw.PLAN", sig)
            assert await anyio.to_thread.run_sync(all_in.wait, 5)
            await sub.unsubscribe()  # the reference's spelling
        assert got == [s.id for s in sent]  # in order, one at a time
        assert threads and loop_thread not in threads
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not sub.active


async def test_a_handler_exception_is_logged_with_its_trace_and_the_next_signals_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with MemorySynapse() as syn, Dendrite(synapse=syn, namespace="boom", heartbeat_s=0) as orch:
        later = SignalRecorder()

        @orch.on_plan
        async def breaks_first(sig: Signal) -> None:
            if sig.payload["steps"] == ["bad"]:
                raise RuntimeError("bad step")
            await later(sig)

        with caplog.at_level(logging.ERROR, logger="cosmonapse.handlers"):
            await orch.emit_plan(trace_id="trc_boom", parent_id=None, steps=["bad"])
            await orch.emit_plan(trace_id="trc_boom", parent_id=None, steps=["good"])
            await later.wait_for(count=1)
        (record,) = [r for r in caplog.records if "trc_boom" in r.getMessage()]
        assert "breaks_first raised on PLAN" in record.getMessage() and record.exc_info is not None
