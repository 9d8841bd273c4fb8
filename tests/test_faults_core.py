"""The fault suite, core part (issue 9): many calls, many STOPs, frozen workers.

* 500 concurrent ``dispatch_and_wait`` calls, half of them STOPped (some before
  their TASK starts, some while it runs): every call resolves within its deadline,
  no STOPped TASK runs on or replies, and afterwards nothing is left — no Pathway,
  no op, no TASK scope, no task;
* a worker process frozen (SIGSTOP) past its callers' deadlines runs none of
  their TASKs when it resumes: each call that gave up STOPped its trace, and the
  tombstone refuses (or the STOP cancels) the TASK.

Memory, cosmo:// and NATS; asyncio and trio.  Run with ``-m faults``.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from bus_kit import KINDS, NETWORK, no_client_tasks_left
from core_kit import pair
from dev_peer import quick_reconnect
from devbus_util import expect_line, peer_process

from cosmonapse import (
    Axon,
    Dendrite,
    DispatchTimeout,
    NeuronContext,
    PathwayClosedError,
    Signal,
    SignalType,
    connect_synapse,
)
from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.testing.harness import SignalRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.faults]
T = SignalType
CALLS = 500
CALL_TIMEOUT_S = 60.0
SLACK_S = 1.0


class Stoppable:
    """Returns at once unless asked to block; a blocked one must be cancelled by its STOP."""

    def __init__(self) -> None:
        self.started: dict[str, anyio.Event] = {}
        self.cancelled: set[str] = set()
        self.blocked: set[str] = set()
        self.finished_blocking: set[str] = set()
        self.changed = anyio.Event()

    def event(self, trace: str) -> anyio.Event:
        return self.started.setdefault(trace, anyio.Event())

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        trace = ctx.trace_id
        self.event(trace).set()
        if not input.get("block"):
            return {"n": input["n"]}
        self.blocked.add(trace)
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.add(trace)
            self.changed.set()
            self.changed = anyio.Event()
            raise
        self.finished_blocking.add(trace)  # pragma: no cover - the STOP never landed
        return {}


@pytest.mark.parametrize("kind", KINDS)
async def test_500_calls_half_of_them_stopped_leave_nothing_behind(
    kind: str, nats_url: str | None, record_property: Any
) -> None:
    neuron = Stoppable()
    outcomes: dict[int, Any] = {}
    late: list[tuple[int, float]] = []
    with anyio.fail_after(120):
        async with no_client_tasks_left(), pair(kind, nats_url, "fault500", [Axon("n", neuron)]) as p:
            orch, worker = p.orch, p.worker

            async def call(i: int, trace: str, block: bool) -> None:
                t0 = time.monotonic()
                try:
                    outcomes[i] = await orch.dispatch_and_wait(
                        neuron="n", input={"n": i, "block": block}, trace_id=trace, timeout_s=CALL_TIMEOUT_S
                    )
                except (PathwayClosedError, DispatchTimeout) as exc:
                    outcomes[i] = exc
                took = time.monotonic() - t0
                if took > CALL_TIMEOUT_S + SLACK_S:
                    late.append((i, took))

            async def stop_when_started(trace: str) -> None:
                await neuron.event(trace).wait()
                await orch.emit_stop(trace_id=trace, reason="half of them")

            traces = [f"trc_{i:026d}" for i in range(CALLS)]
            t_start = time.monotonic()
            stopped = {traces[i] for i in range(CALLS) if i % 2}
            async with anyio.create_task_group() as tg:
                for i, trace in enumerate(traces):
                    tg.start_soon(call, i, trace, trace in stopped)
                    if trace in stopped:
                        if i % 4 == 1:  # at once: its TASK may not even have started
                            await anyio.lowlevel.checkpoint()
                            tg.start_soon(functools.partial(orch.emit_stop, trace_id=trace, reason="early"))
                        else:  # while its Neuron runs
                            tg.start_soon(stop_when_started, trace)

            # every call resolved, in time: a reply for the others, "closed by STOP" for the STOPped
            record_property("all_resolved_s", round(time.monotonic() - t_start, 3))
            assert len(outcomes) == CALLS and not late
            for i, trace in enumerate(traces):
                outcome = outcomes[i]
                if trace in stopped:
                    assert isinstance(outcome, PathwayClosedError), (i, outcome)
                    assert "STOPped" in str(outcome)
                else:
                    assert isinstance(outcome, Signal) and outcome.payload["output"] == {"n": i}, (i, outcome)
            # 0 uncancelled: every STOPped TASK that started was cancelled, none finished or replied
            with anyio.fail_after(30):
                while neuron.cancelled != neuron.blocked:
                    await neuron.changed.wait()
            assert neuron.finished_blocking == set()
            assert neuron.blocked <= stopped
            # figures: STOPped TASKs that started (and were cancelled) vs refused before they started
            record_property("stopped_started_and_cancelled", len(neuron.cancelled))
            record_property("stopped_never_started", len(stopped) - len(neuron.blocked))
            await p.subscribed()  # and every Signal published so far has reached the recorder
            marker = await orch.dispatch_and_wait(neuron="n", input={"n": -1}, timeout_s=30)
            assert marker.payload["output"] == {"n": -1}
            replies = {s.trace_id for s in p.seen.signals if s.type is T.AGENT_OUTPUT}
            assert not replies & stopped
            # 0 left: Pathways, ops, TASK scopes (on both sides), runners busy
            for d in (orch, worker):
                assert d.open_pathways() == []
                assert len(d._core.ops) == 0
                assert d._core._trace_scopes == {}
            with anyio.fail_after(10):
                while worker._core._task_pool is not None and worker._core._task_pool.busy:
                    await anyio.lowlevel.checkpoint()
        # and 0 tasks once they stop (no_client_tasks_left)


@asynccontextmanager
async def network_bus(kind: str, nats_url: str | None) -> AsyncIterator[str]:
    if kind == "nats":
        assert nats_url is not None
        yield nats_url
    else:
        async with DevSynapseServer() as server:
            yield server.url


@pytest.mark.slow
@pytest.mark.parametrize("kind", NETWORK)
async def test_a_worker_frozen_past_its_callers_deadlines_runs_none_of_their_tasks(
    kind: str, nats_url: str | None, record_property: Any
) -> None:
    """The issue's scenario: 80 calls with a 2 s deadline to a worker frozen for 10 s."""
    ns = f"frozen{kind}"
    calls, frozen_for = 80, 10.0
    async with network_bus(kind, nats_url) as url, AsyncExitStack() as stack:
        proc, out = await stack.enter_async_context(peer_process("worker", url, ns))
        stack.callback(lambda: proc.returncode is None and proc.send_signal(signal.SIGCONT))
        await expect_line(out, "ready")
        syn = await connect_synapse(url, **quick_reconnect(url))
        stack.push_async_callback(syn.close)
        orch = Dendrite(synapse=syn, namespace=ns, dendrite_id="orch", heartbeat_s=0)
        await stack.enter_async_context(orch)
        seen = SignalRecorder()
        await syn.subscribe(f"cosmonapse.{ns}.AGENT_OUTPUT", seen)
        warm = await orch.dispatch_and_wait(neuron="echo", input={"counts": True}, timeout_s=10)
        assert warm.payload["output"]["counts"] == {"started": 0, "finished": 0, "cancelled": 0}

        proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        gave_up: list[str] = []

        async def call(n: int) -> None:
            with pytest.raises(DispatchTimeout) as caught:
                await orch.dispatch_and_wait(neuron="echo", input={"sleep": 3, "tag": f"t{n}"}, timeout_s=2)
            gave_up.append(str(caught.value).split("trace ", 1)[1].split(",")[0])

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(calls):
                    tg.start_soon(call, n)
        assert len(gave_up) == calls
        await anyio.sleep(max(0.0, frozen_for - (time.monotonic() - frozen_at)))  # allowed: the freeze
        proc.send_signal(signal.SIGCONT)

        # The worker reads its backlog: 80 TASKs, then their 80 STOPs, then our question.
        with anyio.fail_after(30):
            while True:
                reply = await orch.dispatch_and_wait(neuron="echo", input={"counts": True}, timeout_s=10)
                counts = reply.payload["output"]["counts"]
                if counts["started"] == counts["finished"] + counts["cancelled"]:
                    break
        record_property("started_after_resume", counts["started"])
        assert counts["finished"] == 0, counts  # none of the abandoned TASKs ran to the end
        assert not {s.trace_id for s in seen.signals} & set(gave_up)  # and none answered
