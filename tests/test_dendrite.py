"""The Dendrite: dispatch shapes, the Neuron contract, life cycle and structured concurrency."""

from __future__ import annotations

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
    Signal,
    SignalType,
)
from cosmonapse.testing.harness import SignalRecorder, assert_no_leaked_tasks, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


async def echo(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    return {"echo": input, "trace": context.trace_id, "task": context.task_id}


async def test_addressed_dispatch_and_wait_returns_agent_output() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="echo", input={"x": 1}, timeout_s=5)
    assert reply.type is T.AGENT_OUTPUT
    assert reply.payload["output"]["echo"] == {"x": 1}
    assert reply.directed is not None and reply.directed.id == "echo"
    assert reply.payload["output"]["trace"] == reply.trace_id
    assert reply.parent_id == reply.payload["output"]["task"]


async def test_plain_function_neuron_runs_in_a_worker_thread() -> None:
    import threading

    main_thread = threading.get_ident()

    def sync_neuron(input: dict[str, Any], context: NeuronContext) -> int:
        return 0 if threading.get_ident() == main_thread else input["n"] * 2

    async with memory_cluster(workers={"double": sync_neuron}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="double", input={"n": 21}, timeout_s=5)
    assert reply.payload["output"] == {"value": 42}  # non-dict output is wrapped


@pytest.mark.parametrize(
    ("output", "stype", "payload"),
    [
        ({"__error__": True, "code": "BAD", "message": "no", "recoverable": True}, T.ERROR,
         {"code": "BAD", "message": "no", "recoverable": True}),
        ({"__error__": True}, T.ERROR, {"code": "NEURON_ERROR", "message": "", "recoverable": False}),
        ({"__clarification__": True, "question": "which?", "context": {"k": 1}}, T.CLARIFICATION,
         {"question": "which?", "context": {"k": 1}}),
        ({"__permission__": True, "action": "rm", "scope": "/tmp", "reason": "clean"}, T.PERMISSION,
         {"action": "rm", "scope": "/tmp", "reason": "clean"}),
        ("text", T.AGENT_OUTPUT, {"output": {"value": "text"}}),
        ({"a": 1}, T.AGENT_OUTPUT, {"output": {"a": 1}}),
    ],
)  # fmt: skip
async def test_reply_markers(output: Any, stype: SignalType, payload: dict[str, Any]) -> None:
    async def neuron(input: dict[str, Any], context: NeuronContext) -> Any:
        return output

    async with memory_cluster(workers={"n": neuron}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="n", input={}, timeout_s=5)
    assert reply.type is stype
    assert reply.payload == payload


async def test_neuron_exception_becomes_error_signal() -> None:
    async def broken(input: dict[str, Any], context: NeuronContext) -> Any:
        raise ValueError("kaput")

    async with memory_cluster(workers={"broken": broken}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="broken", input={}, timeout_s=5)
        # the worker keeps serving after a Neuron raised
        again = await c.orchestrator.dispatch_and_wait(neuron="broken", input={}, timeout_s=5)
    assert reply.type is T.ERROR and again.type is T.ERROR
    assert reply.payload["code"] == "NEURON_EXCEPTION"
    assert "kaput" in reply.payload["message"] and "ValueError" in reply.payload["message"]
    assert reply.payload["recoverable"] is False


async def test_finalize_promotes_agent_output_to_final() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        final = await c.orchestrator.dispatch_and_wait(
            neuron="echo", input={"q": 1}, scope="terminal", timeout_s=5
        )
        pw = await c.orchestrator.dispatch(neuron="echo", input={"q": 2}, finalize=True)
        first = await pw.wait(5)
        second = await pw.wait(5)
    assert final.type is T.FINAL and final.payload["result"]["echo"] == {"q": 1}
    assert (first.type, second.type) == (T.AGENT_OUTPUT, T.FINAL)
    assert second.parent_id == first.id
    assert pw.closed


async def test_capability_routing_uses_queue_groups_round_robin() -> None:
    seen: list[str] = []

    def make(name: str) -> Any:
        async def neuron(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
            seen.append(name)
            return {"by": name}

        return neuron

    async with assert_no_leaked_tasks(), MemorySynapse() as syn:
        workers = []
        for name in ("a", "b"):
            w = Dendrite(synapse=syn, namespace="t", role="worker", dendrite_id=name)
            w.attach_axon(Axon(neuron_id=name, neuron_fn=make(name), capabilities=["sum", "english"]))
            workers.append(w)
        orch = Dendrite(synapse=syn, namespace="t")
        async with workers[0], workers[1], orch:
            for _ in range(6):
                r = await orch.dispatch_and_wait(capabilities=["sum"], input={}, timeout_s=5)
                assert r.type is T.AGENT_OUTPUT
            with pytest.raises(DispatchTimeout, match=r"capabilities \['missing'\]"):
                await orch.dispatch_and_wait(capabilities=["missing"], input={}, timeout_s=0.2)
    assert sorted(seen) == ["a"] * 3 + ["b"] * 3  # each TASK ran once, spread over the group


async def test_open_call_runs_on_catch_all_axon_only() -> None:
    async def catcher(input: dict[str, Any], context: NeuronContext) -> str:
        return "caught"

    axons = [Axon(neuron_id="plain", neuron_fn=echo), Axon(neuron_id="c", neuron_fn=catcher, catch_all=True)]
    async with memory_cluster(axons=axons) as c:
        reply = await c.orchestrator.dispatch_and_wait(input={}, open_call=True, timeout_s=5)
    assert reply.directed is not None and reply.directed.id == "c"


async def test_a_dispatch_names_a_neuron_or_capabilities_or_asks_for_an_open_call() -> None:
    """Seed 004: "neuron= or capabilities=; at least one required"; open calls are opt-in."""
    async with memory_cluster() as c:
        orch = c.orchestrator
        for call in (orch.dispatch_task, orch.dispatch, orch.dispatch_and_wait, orch.dispatch_and_subscribe):
            with pytest.raises(DendriteProtocolError, match="at least one is required") as info:
                await call(input={})
            assert isinstance(info.value, ValueError)  # what ported code catches
        with pytest.raises(DendriteProtocolError, match="open_call=True takes neither"):
            await orch.dispatch_task(neuron="echo", input={}, open_call=True)
        assert orch.open_pathways() == []  # nothing was opened or published


async def test_timeout_names_the_neuron_and_trace() -> None:
    async with memory_cluster() as c:
        with pytest.raises(DispatchTimeout) as info:
            await c.orchestrator.dispatch_and_wait(neuron="nobody", input={}, timeout_s=0.05)
    message = str(info.value)
    assert "neuron 'nobody'" in message and "trc_" in message and "0.05" in message
    assert isinstance(info.value, TimeoutError)


async def test_role_and_type_guards() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        worker = c.worker
        with pytest.raises(DendriteProtocolError, match="orchestrator"):
            await worker.dispatch_and_wait(neuron="echo", input={})
        with pytest.raises(DendriteProtocolError, match="orchestrator"):
            await worker.dispatch_task(neuron="echo", input={})
        with pytest.raises(DendriteProtocolError, match="orchestrator"):
            await worker.emit(Signal(type=T.STOP, payload={"rollback": False}))
        for forbidden in (T.AGENT_OUTPUT, T.REGISTER, T.HEARTBEAT, T.CLARIFICATION):
            with pytest.raises(DendriteProtocolError, match=forbidden.value):
                await c.orchestrator.emit(Signal(type=forbidden))
        # seeds 001/004: a worker cannot emit orchestration Signals (TASK / FINAL / ...) ...
        for refused in (
            worker.emit_final(trace_id="trc_x", parent_id=None, result={}),
            worker.emit_error(trace_id="trc_x", parent_id=None, code="X", message="x"),
            worker.emit_plan(trace_id="trc_x", parent_id=None, steps=["a"]),
            worker.emit_thought_delta(trace_id="trc_x", parent_id=None, delta="a"),
            worker.emit_tool_call(trace_id="trc_x", parent_id=None, tool="t", args={}),
            worker.emit_escalation(trace_id="trc_x", parent_id=None, reason="r"),
        ):
            with pytest.raises(DendriteProtocolError, match="orchestrator"):
                await refused
        # ... but it may discover, answer, decide and remember
        await worker.discover()
        await worker.emit(Signal(type=T.CLARIFICATION_ANSWER, trace_id="trc_x", payload={"answer": 1}))
    with pytest.raises(ValueError, match="role"):
        Dendrite(synapse=MemorySynapse(), role="boss")


async def test_dispatch_before_start_is_a_clear_error() -> None:
    d = Dendrite(synapse=MemorySynapse())
    with pytest.raises(DendriteProtocolError, match="running"):
        await d.dispatch_task(neuron="x", input={})


async def test_attach_twice_is_refused() -> None:
    d = Dendrite(synapse=MemorySynapse())
    d.attach_axon(Axon(neuron_id="a", neuron_fn=echo))
    with pytest.raises(DendriteProtocolError, match="already attached"):
        d.attach_axon(Axon(neuron_id="a", neuron_fn=echo))


async def test_presence_register_heartbeat_deregister_discover() -> None:
    async with assert_no_leaked_tasks(), MemorySynapse() as syn:
        observer = Dendrite(synapse=syn, namespace="p", dendrite_id="obs")
        seen = SignalRecorder()
        for t in (T.REGISTER, T.HEARTBEAT, T.DEREGISTER):
            observer.on_signal(t, seen)
        worker = Dendrite(synapse=syn, namespace="p", role="worker", heartbeat_s=0.02)
        worker.attach_axon(Axon(neuron_id="w", neuron_fn=echo, capabilities=["b", "a"], version="1.2"))
        async with observer:
            async with worker:
                await seen.wait_for(lambda s: any(x.type is T.HEARTBEAT for x in s))
                n_registers = len(seen.of_type(T.REGISTER))
                await observer.discover(capabilities=["a"])
                await seen.wait_for(lambda s: len([x for x in s if x.type is T.REGISTER]) > n_registers + 1)
            await seen.wait_for(lambda s: any(x.type is T.DEREGISTER for x in s))
    reg = seen.of_type(T.REGISTER)[0]
    assert reg.directed is not None
    assert (reg.directed.id, reg.directed.type, reg.directed.capabilities) == ("w", "neuron", ("a", "b"))
    assert reg.payload == {"role": "neuron", "capabilities": ["a", "b"], "version": "1.2"}
    hb = seen.of_type(T.HEARTBEAT)[0]
    assert hb.payload == {"status": "ok"} and hb.directed is not None and hb.directed.id == "w"
    traces = {s.trace_id for s in seen.signals}
    assert len(traces) == len(seen.signals)  # management traffic gets a fresh trace each time
    assert seen.of_type(T.DEREGISTER)[-1].directed.id == "w"  # type: ignore[union-attr]


async def test_add_and_detach_axon_while_running() -> None:
    async with memory_cluster() as c:
        seen = SignalRecorder()
        c.orchestrator.on_register_signal(seen)
        c.orchestrator.on_deregister_signal(seen)
        await c.worker.add_axon(Axon(neuron_id="late", neuron_fn=echo, capabilities=["z"]))
        reply = await c.orchestrator.dispatch_and_wait(capabilities=["z"], input={}, timeout_s=5)
        assert reply.directed is not None and reply.directed.id == "late"
        await c.worker.detach_axon("late", reason="done")
        with pytest.raises(DispatchTimeout):
            await c.orchestrator.dispatch_and_wait(neuron="late", input={}, timeout_s=0.1)
        assert c.worker.capabilities == []


async def test_exit_cancels_neuron_mid_flight_and_still_deregisters() -> None:
    started = anyio.Event()
    finally_ran = anyio.Event()

    async def forever(input: dict[str, Any], context: NeuronContext) -> Any:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            finally_ran.set()

    async with assert_no_leaked_tasks(), MemorySynapse() as syn:
        observer = Dendrite(synapse=syn, namespace="x", dendrite_id="obs")
        gone = SignalRecorder()
        observer.on_deregister_signal(gone)
        async with observer:
            worker = Dendrite(synapse=syn, namespace="x", role="worker")
            worker.attach_axon(Axon(neuron_id="forever", neuron_fn=forever))
            orch = Dendrite(synapse=syn, namespace="x")
            async with worker, orch:
                await orch.dispatch_task(neuron="forever", input={})
                with anyio.fail_after(5):
                    await started.wait()
            assert finally_ran.is_set()  # cancelled before __aexit__ returned
            await gone.wait_for()
    assert gone.signals[0].directed is not None and gone.signals[0].directed.id == "forever"


async def test_concurrent_tasks_are_bounded() -> None:
    running = 0
    peak = 0
    release = anyio.Event()
    arrived = anyio.Event()

    async def slow(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            arrived.set()
        await release.wait()
        running -= 1
        return {}

    async with memory_cluster(workers={"slow": slow}, worker_kw={"max_concurrent_tasks": 2}) as c:
        pathways = [await c.orchestrator.dispatch(neuron="slow", input={}) for _ in range(5)]
        with anyio.fail_after(5):
            await arrived.wait()
        release.set()
        for pw in pathways:
            assert (await pw.wait(5)).type is T.AGENT_OUTPUT
    assert peak == 2


async def test_handler_may_itself_dispatch_and_wait() -> None:
    results: list[Signal] = []
    done = anyio.Event()
    async with memory_cluster(workers={"echo": echo}) as c:

        @c.orchestrator.on_agent_output(neuron="echo")
        async def chain(sig: Signal) -> None:
            if sig.payload["output"]["echo"].get("step") == 1:
                results.append(
                    await c.orchestrator.dispatch_and_wait(neuron="echo", input={"step": 2}, timeout_s=5)
                )
                done.set()

        reply = await c.orchestrator.dispatch_and_wait(neuron="echo", input={"step": 0}, timeout_s=5)
        assert reply.type is T.AGENT_OUTPUT
        await c.orchestrator.dispatch_and_wait(neuron="echo", input={"step": 1}, timeout_s=5)
        with anyio.fail_after(5):
            await done.wait()
    assert results[0].payload["output"]["echo"] == {"step": 2}


async def test_neuron_can_dispatch_with_ambient_parent() -> None:
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        orch = Dendrite(synapse=syn, namespace="n")

        async def outer(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
            inner = await orch.dispatch_and_wait(neuron="inner", input={}, timeout_s=5)
            return {"inner_parent": inner.payload["output"]["parent"], "task": context.task_id}

        async def inner(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
            return {"parent": context.task.parent_id}

        worker = Dendrite(synapse=syn, namespace="n", role="worker", max_concurrent_tasks=1)
        worker.attach_axon(Axon(neuron_id="outer", neuron_fn=outer))
        worker2 = Dendrite(synapse=syn, namespace="n", role="worker")
        worker2.attach_axon(Axon(neuron_id="inner", neuron_fn=inner))
        async with worker, worker2, orch:
            reply = await orch.dispatch_and_wait(neuron="outer", input={}, timeout_s=5)
    out = reply.payload["output"]
    assert out["inner_parent"] == out["task"]  # the inner TASK's parent is the running TASK


async def test_neuron_context_emits_on_its_trace_in_order() -> None:
    async def streamer(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        for word in ("a", "b", "c"):
            await context.emit_thought_delta(word)
        await context.emit_plan(["x"], rationale="r")
        await context.emit_tool_call("search", {"q": 1}, call_id="c1")
        await context.emit_tool_result("search", result=[1], call_id="c1")
        return {"done": True}

    async with memory_cluster(workers={"s": streamer}) as c:
        got = []
        async with await c.orchestrator.dispatch(neuron="s", input={}) as pw:
            async for sig in pw:
                got.append(sig)
                if sig.type is T.AGENT_OUTPUT:
                    break
    types = [s.type for s in got]
    assert types == [T.THOUGHT_DELTA] * 3 + [T.PLAN, T.TOOL_CALL, T.TOOL_RESULT, T.AGENT_OUTPUT]
    assert [s.payload["delta"] for s in got[:3]] == ["a", "b", "c"]
    assert [s.payload["seq"] for s in got[:3]] == [0, 1, 2]
    task_id = got[-1].parent_id
    assert all(s.parent_id == task_id and s.trace_id == pw.trace_id for s in got)
    assert all(s.directed is not None and s.directed.id == "s" for s in got)


async def test_lifecycle_hooks() -> None:
    connected = anyio.Event()
    refreshed = anyio.Event()
    ticks = 0
    ticked = anyio.Event()
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        d = Dendrite(synapse=syn, namespace="h", role="worker", heartbeat_s=0.01)
        d.attach_axon(Axon(neuron_id="e", neuron_fn=echo))

        @d.on_connect
        async def on_connect() -> None:
            connected.set()

        @d.on_refresh
        def on_refresh() -> None:
            refreshed.set()

        @d.on_schedule(every_s=0.01)
        async def tick() -> None:
            nonlocal ticks
            ticks += 1
            if ticks == 3:
                ticked.set()

        async with d:
            with anyio.fail_after(5):
                await connected.wait()
                await refreshed.wait()
                await ticked.wait()
    with pytest.raises(ValueError):
        d.on_schedule(every_s=0)


async def test_synapse_is_not_closed_by_the_dendrite() -> None:
    async with MemorySynapse() as syn:
        async with Dendrite(synapse=syn):
            pass
        assert syn.connected
        async with Dendrite(synapse=syn) as again:  # and a Dendrite can run again on it
            assert again.running


async def test_stop_releases_a_router_waiting_for_a_runner() -> None:
    """With every runner busy the router waits; stopping must not leave the bus pump stuck."""
    started = anyio.Event()

    async def hold(input: dict[str, Any], context: NeuronContext) -> Any:
        started.set()
        await anyio.sleep_forever()

    # two blocks on purpose: the leak check must run while the synapse is still open
    async with MemorySynapse() as syn:  # noqa: SIM117
        async with assert_no_leaked_tasks():
            worker = Dendrite(synapse=syn, namespace="b", role="worker", max_concurrent_tasks=1)
            worker.attach_axon(Axon(neuron_id="hold", neuron_fn=hold))
            orch = Dendrite(synapse=syn, namespace="b")
            async with worker, orch:
                for _ in range(3):  # the 2nd waits for the runner inside the router
                    await orch.dispatch_task(neuron="hold", input={})
                with anyio.fail_after(5):
                    await started.wait()
                await anyio.wait_all_tasks_blocked()
        # the synapse is still open and every pump of the stopped Dendrites has ended
