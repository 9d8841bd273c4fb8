"""Order within a trace (issue 11): handlers and Pathway callbacks see a trace as it happened.

* a handler gets one trace's Signals one at a time, in the order they reached
  the Dendrite — even when it awaits between them (an SSE write);
* different traces run concurrently: a handler stuck on one trace does not hold
  up another;
* a handler far behind on one trace drops the oldest non-reply beyond its backlog;
* a Pathway's ``on()`` callbacks for a Signal have finished before ``wait()`` or
  iteration hands that Signal over.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from bus_kit import KINDS, worker_and_orchestrator

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext, Signal, SignalType
from cosmonapse.handlers import HANDLER_BACKLOG
from cosmonapse.testing.harness import SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


async def streamer(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    """Streams ``n`` numbered tokens, then answers."""
    for i in range(int(input["n"])):
        await context.emit_thought_delta(f"{i} ")
    return {"done": input["n"]}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_handler_that_awaits_gets_the_tokens_of_a_trace_in_order(
    kind: str, nats_url: str | None
) -> None:
    """Seed 000's ``@on_thought_delta`` writes each token to an SSE stream: 200 tokens, in order."""
    async with worker_and_orchestrator(kind, nats_url, "order", [Axon("streamer", streamer)]) as orch:
        got: list[str] = []
        written = SignalRecorder()
        busy = 0
        overlapped = False

        @orch.on_thought_delta
        async def write_to_sse(sig: Signal) -> None:
            nonlocal busy, overlapped
            busy += 1
            overlapped |= busy > 1
            for _ in range(random.randint(0, 3)):  # a write that yields a few times
                await anyio.lowlevel.checkpoint()
            got.append(sig.payload["delta"])
            busy -= 1
            await written(sig)

        reply = await orch.dispatch_and_wait(neuron="streamer", input={"n": 200}, timeout_s=30)
        assert reply.payload["output"] == {"done": 200}
        await written.wait_for(count=200, timeout_s=10)
        assert got == [f"{i} " for i in range(200)]
        assert not overlapped  # one call at a time for one trace


async def test_traces_run_concurrently_and_a_stuck_trace_holds_up_no_other() -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="conc", heartbeat_s=0)
        release_a = anyio.Event()
        b_done = anyio.Event()
        calls: list[tuple[str, int]] = []
        finished = SignalRecorder()

        @orch.on_plan
        async def handler(sig: Signal) -> None:
            calls.append((sig.trace_id, sig.payload["steps"][0]))
            if sig.trace_id == "trc_a":
                await release_a.wait()  # trace A is stuck on its first Signal
            elif len([c for c in calls if c[0] == "trc_b"]) == 3:
                b_done.set()
            await finished(sig)

        async with orch:
            for i in range(3):
                await orch.emit_plan(trace_id="trc_a", parent_id=None, steps=[i])
                await orch.emit_plan(trace_id="trc_b", parent_id=None, steps=[i])
            with anyio.fail_after(5):
                await b_done.wait()  # all of B ran while A sat on its first Signal
            assert [c for c in calls if c[0] == "trc_a"] == [("trc_a", 0)]
            release_a.set()
            await finished.wait_for(count=6)
        assert [n for t, n in calls if t == "trc_a"] == [0, 1, 2]
        assert [n for t, n in calls if t == "trc_b"] == [0, 1, 2]


async def test_two_handlers_on_one_trace_each_keep_order_and_do_not_wait_for_each_other() -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="two", heartbeat_s=0)
        slow_gate = anyio.Event()
        fast, slow = SignalRecorder(), SignalRecorder()

        @orch.on_plan
        async def slow_handler(sig: Signal) -> None:
            await slow_gate.wait()
            await slow(sig)

        orch.on_plan(fast)

        async with orch:
            for i in range(20):
                await orch.emit_plan(trace_id="trc_1", parent_id=None, steps=[i])
            await fast.wait_for(count=20)
            assert slow.signals == []
            slow_gate.set()
            await slow.wait_for(count=20)
        assert [s.payload["steps"][0] for s in fast.signals] == list(range(20))
        assert [s.payload["steps"][0] for s in slow.signals] == list(range(20))


async def test_a_handler_far_behind_on_a_trace_drops_the_oldest_non_reply_and_keeps_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="lag", heartbeat_s=0)
        orch._handlers.backlog = 4
        gate = anyio.Event()
        recorder = SignalRecorder()
        seen = recorder.signals

        @orch.on_trace("trc_lag")
        async def stuck(sig: Signal) -> None:
            first = not seen
            await recorder(sig)
            if first:
                await gate.wait()

        async with orch:
            await orch.emit_plan(trace_id="trc_lag", parent_id=None, steps=["first"])  # held at the gate
            for i in range(10):
                await orch.emit_plan(trace_id="trc_lag", parent_id=None, steps=[i])
            await orch.emit_final(trace_id="trc_lag", parent_id=None, result={"ok": True})
            gate.set()
            await recorder.wait_for(lambda sigs: any(s.type is T.FINAL for s in sigs))
            assert orch._handlers.dropped == 7  # 11 queued behind the first, 4 kept
        plans = [s.payload["steps"][0] for s in seen if s.type is T.PLAN]
        assert plans == ["first", 7, 8, 9]  # the newest kept, in order
        assert seen[-1].type is T.FINAL  # replies are never the ones dropped
        assert any("Signals behind on trace trc_lag" in r.getMessage() for r in caplog.records)
    assert HANDLER_BACKLOG == 1024


async def test_pathway_callbacks_have_run_before_wait_hands_the_reply_over() -> None:
    """Seed 002: 5 THOUGHT_DELTAs and the reply; when ``wait()`` returns, all 6 callbacks ran (20 of 20)."""
    async with memory_cluster(workers={"streamer": streamer}) as c:
        for _ in range(20):
            pw = await c.orchestrator.dispatch(neuron="streamer", input={"n": 5})
            ran: list[str] = []

            async def callback(sig: Signal, ran: list[str] = ran) -> None:
                await anyio.lowlevel.checkpoint()  # a callback that awaits something
                ran.append(sig.payload.get("delta", "reply"))

            pw.on(T.THOUGHT_DELTA)(callback)
            pw.on(T.AGENT_OUTPUT)(callback)

            reply = await pw.wait(10)
            assert reply.type is T.AGENT_OUTPUT
            assert ran == ["0 ", "1 ", "2 ", "3 ", "4 ", "reply"]
            await pw.close()


async def test_pathway_iteration_hands_over_each_signal_after_its_callbacks_in_order() -> None:
    async with memory_cluster(workers={"streamer": streamer}) as c:
        pw = await c.orchestrator.dispatch(neuron="streamer", input={"n": 30})
        called: list[str] = []

        @pw.on(T.THOUGHT_DELTA)
        def on_delta(sig: Signal) -> None:  # plain callbacks are fine too
            called.append(sig.id)

        read: list[str] = []
        async with pw:
            async for sig in pw:
                if sig.type is T.THOUGHT_DELTA:
                    assert sig.id in called  # its callback ran before we got it
                    read.append(sig.payload["delta"])
                if sig.type is T.AGENT_OUTPUT:
                    break
        assert read == [f"{i} " for i in range(30)]


async def test_a_final_with_a_callback_closes_the_pathway_after_the_callback() -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="fin", heartbeat_s=0)
        async with orch:
            pw = await orch.observe_pathway("trc_fin")
            open_during_callback: list[bool] = []

            @pw.on(T.FINAL)
            async def on_final(sig: Signal) -> None:
                await anyio.lowlevel.checkpoint()
                open_during_callback.append(pw.closed)

            await orch.emit_plan(trace_id="trc_fin", parent_id=None, steps=[])
            await orch.emit_final(trace_id="trc_fin", parent_id=None, result={})
            after = {"trace_id": "trc_fin", "parent_id": None, "steps": ["after"]}  # no longer the trace's
            await orch.emit_plan(**after)
            final = await pw.wait_for(T.FINAL, 5)
            assert final.type is T.FINAL and open_during_callback == [False] and pw.closed
            assert (await pw.wait_for(T.PLAN, 1)).payload["steps"] == []
            with pytest.raises(Exception, match="closed"):
                await pw.wait_for(T.PLAN, 1)


async def test_a_pathway_built_alone_runs_its_callbacks_inline() -> None:
    """``Pathway(trace_id)`` has no Dendrite: what is handed to it is buffered, callbacks run inline."""
    from cosmonapse import Pathway, permission_signal

    pw = Pathway("trc_alone", scope="terminal")
    seen: list[str] = []
    pw.on(T.PERMISSION)(lambda sig: seen.append(sig.id))
    ask = permission_signal(trace_id="trc_alone", parent_id=None, neuron="w", action="delete")
    await pw._deliver(ask)
    assert seen == [ask.id]
    assert await pw.wait(1) is ask and not pw.closed and pw.parent_id is None


async def test_signals_held_for_slow_callbacks_are_bounded_like_the_buffer() -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, namespace="held", heartbeat_s=0, pathway_buffer=4)
        gate = anyio.Event()
        called = SignalRecorder()

        async with orch:
            pw = await orch.observe_pathway("trc_held")

            @pw.on(T.PLAN)
            async def slow(sig: Signal) -> None:
                await called(sig)
                await gate.wait()

            for i in range(10):
                await orch.emit_plan(trace_id="trc_held", parent_id=None, steps=[i])
            await orch.emit_final(trace_id="trc_held", parent_id=None, result={})
            await called.wait_for(count=1)
            gate.set()
            final = await pw.wait_for(T.FINAL, 5)
        assert final.type is T.FINAL  # the reply is never the one dropped
        # 4 held at most, the running one included: it, then the newest that fit beside the FINAL
        assert [s.payload["steps"][0] for s in called.signals] == [0, 8, 9]
        assert pw.dropped == 7
