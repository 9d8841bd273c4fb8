"""Bounded state (issue 9, item 10): what nobody waits on does not pile up, and a failing
handler does not flood the log.

* Open Pathways are capped (``max_open_pathways``, 10,000): opening one more closes
  the oldest one no reader is waiting on, counted in ``DendriteStats.evicted_pathways``;
  its reader is told why.  Ops live only as long as their caller waits.
* A job that keeps failing logs its first tracebacks per minute, then one
  "N more" summary line (``DendriteStats.suppressed_errors``).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import anyio
import pytest

from cosmonapse import Dendrite, MemorySynapse, NeuronContext, PathwayClosedError, Signal, SignalType
from cosmonapse.core import DEFAULT_MAX_OPEN_PATHWAYS
from cosmonapse.pathway import Pathway
from cosmonapse.runners import FAILURE_BURST
from cosmonapse.testing.harness import memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return input


async def test_the_oldest_unread_pathways_are_closed_over_the_cap() -> None:
    async with memory_cluster(workers={"echo": echo}, orchestrator_kw={"max_open_pathways": 3}) as c:
        orch = c.orchestrator
        waited = await orch.dispatch(neuron="nobody", input={})  # someone is reading this one
        async with anyio.create_task_group() as tg:
            outcome: list[BaseException] = []

            async def reader() -> None:
                try:
                    await waited.wait()
                except PathwayClosedError as exc:
                    outcome.append(exc)

            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            unread = [await orch.dispatch(neuron="echo", input={"n": n}) for n in range(2)]
            for pw in unread:  # answered, never read nor closed
                with anyio.fail_after(5):
                    while not pw._buf:
                        await anyio.lowlevel.checkpoint()
            newer = [await orch.dispatch(neuron="nobody", input={}) for _ in range(2)]
            assert len(orch.open_pathways()) == 3
            assert [pw.closed for pw in unread] == [True, True]  # oldest unread first
            assert not waited.closed and not any(pw.closed for pw in newer)
            assert orch.stats.evicted_pathways == 2
            # what was buffered stays readable; then the reader learns why it closed
            assert (await unread[0].wait()).type is T.AGENT_OUTPUT
            with pytest.raises(PathwayClosedError, match="evicted: over max_open_pathways=3"):
                await unread[0].wait()
            await waited.close()
        assert outcome and "closed before a reply arrived" in str(outcome[0])


@pytest.mark.slow
async def test_120_000_pathways_never_closed_stay_bounded() -> None:
    """The issue's scenario: 120,000 Pathways opened and never closed — half never answered,
    half answered and never read — with the default cap.  (``python -m bench core`` measures
    the memory this keeps: a few MB instead of ~140.)"""
    async with memory_cluster(workers={"echo": echo}, check_leaks=False) as c:
        orch = c.orchestrator
        for n in range(60_000):
            await orch.dispatch(neuron="nobody", input={"n": n})  # unanswered
            await orch.dispatch(neuron="echo", input={"n": n})  # answered, never read
        gc.collect()
        alive = sum(isinstance(o, Pathway) for o in gc.get_objects())
        assert len(orch.open_pathways()) == DEFAULT_MAX_OPEN_PATHWAYS
        assert orch.stats.evicted_pathways == 120_000 - DEFAULT_MAX_OPEN_PATHWAYS
        assert alive <= DEFAULT_MAX_OPEN_PATHWAYS + 10  # the evicted ones are garbage


async def test_ops_leave_the_table_whatever_ends_them() -> None:
    async with memory_cluster(workers={"echo": echo}) as c:
        orch = c.orchestrator
        with pytest.raises(TimeoutError):
            await orch.recall(engram_id="nobody", query={}, deadline_ms=50)
        with pytest.raises(TimeoutError):
            question = Signal(type=T.CLARIFICATION, payload={"question": "?"})
            await orch.await_decision(question, timeout_s=0.05)
        assert await orch.stop_trace("trc_" + "Q" * 26, collect_acks=True, timeout_s=0.05) == []
        assert len(orch._core.ops) == 0


async def test_a_handler_that_keeps_failing_is_logged_a_few_times_then_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = 5000
    calls = 0
    all_in = anyio.Event()

    async with MemorySynapse() as bus:
        orch = Dendrite(synapse=bus, namespace="flood", dendrite_id="orch", heartbeat_s=0)

        @orch.on_audit
        def broken(sig: Signal) -> None:
            nonlocal calls
            calls += 1
            if calls == failures:
                all_in.set()
            raise ValueError(f"bad audit {calls}")

        caplog.set_level(logging.ERROR, logger="cosmonapse.handlers")
        async with orch:
            for n in range(failures):
                await orch.emit(Signal(type=T.AUDIT, payload={"n": n}))
            with anyio.fail_after(30):
                await all_in.wait()
            assert orch.stats.suppressed_errors == failures - FAILURE_BURST
        # stopping flushes the summary
    records = [r for r in caplog.records if r.name == "cosmonapse.handlers"]
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == FAILURE_BURST
    assert "test_bounded_state" in tracebacks[0].getMessage() and "broken" in tracebacks[0].getMessage()
    summaries = [r.getMessage() for r in records if not r.exc_info]
    assert len(summaries) == 1
    assert f"raised {failures - FAILURE_BURST} more times" in summaries[0]
    assert "ValueError: bad audit 5000" in summaries[0]
    assert len(records) == FAILURE_BURST + 1


async def test_a_pathway_callback_that_keeps_failing_is_logged_a_few_times_then_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deltas = 500

    async def chatty(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        for n in range(deltas):
            await ctx.emit_thought_delta(f"d{n}")
        return {"done": True}

    calls = 0

    def broken(sig: Signal) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad delta {calls}")

    caplog.set_level(logging.ERROR, logger="cosmonapse.pathway")
    async with memory_cluster(workers={"chatty": chatty}) as c:
        orch = c.orchestrator
        pw = await orch.dispatch(neuron="chatty", input={})
        pw.on(T.THOUGHT_DELTA)(broken)
        with anyio.fail_after(30):
            reply = await pw.wait()  # callbacks of earlier Signals have run before a reader gets it
        assert reply.type is T.AGENT_OUTPUT and calls == deltas
        assert orch.stats.suppressed_errors == deltas - FAILURE_BURST
    records = [r for r in caplog.records if r.name == "cosmonapse.pathway"]
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == FAILURE_BURST and "broken" in tracebacks[0].getMessage()
    summaries = [r.getMessage() for r in records if not r.exc_info]
    assert len(summaries) == 1 and f"raised {deltas - FAILURE_BURST} more times" in summaries[0]


async def test_the_cap_is_a_constructor_argument() -> None:
    async with MemorySynapse() as bus:
        with pytest.raises(ValueError, match="max_open_pathways"):
            Dendrite(synapse=bus, max_open_pathways=0)
        assert Dendrite(synapse=bus).max_open_pathways == DEFAULT_MAX_OPEN_PATHWAYS
