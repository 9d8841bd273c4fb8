"""A TASK delivered again is not run again (issue 9; the kit's "duplicated TASK" machine).

A bus may deliver a Signal twice (a redelivery after a reconnect, a duplicating
proxy, a publisher retrying).  A Dendrite keeps the ids of the TASKs (and awards)
it ran in a bounded, time-limited window (``hosting.SEEN_TASKS`` ids for
``SEEN_TASKS_TTL_S``): a second copy — while the first runs or after it answered —
is counted (``DendriteStats.duplicate_tasks``) and dropped.

On memory, cosmo:// and NATS, asyncio and trio.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from bus_kit import KINDS
from core_kit import pair

import cosmonapse.ids
from cosmonapse import Axon, Directed, NeuronContext, Signal, SignalType
from cosmonapse.ids import SeenIds

pytestmark = pytest.mark.anyio
T = SignalType


class Counting:
    def __init__(self, hold: bool = False) -> None:
        self.runs: list[str] = []
        self.release = anyio.Event()
        self.hold = hold
        self.started = anyio.Event()

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        self.runs.append(ctx.task_id)
        self.started.set()
        if self.hold:
            await self.release.wait()
        return {"n": input.get("n")}


def outputs(p: Any, trace: str) -> list[Signal]:
    return [s for s in p.seen.trace(trace) if s.type is T.AGENT_OUTPUT]


@pytest.mark.parametrize("routed", [False, True], ids=["addressed", "capability-routed"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_task_delivered_twice_runs_once(kind: str, nats_url: str | None, routed: bool) -> None:
    neuron = Counting()
    async with pair(kind, nats_url, "redeliver1", [Axon("count", neuron, ["count"])]) as p:
        target: dict[str, Any] = {"capabilities": ["count"]} if routed else {"neuron": "count"}
        if routed:
            task = Signal(type=T.TASK, payload={"input": {"n": 1}, "capabilities": ["count"]})
        else:
            task = Signal(type=T.TASK, directed=Directed("count"), payload={"input": {"n": 1}})
        pw = await p.orch.observe_pathway(task.trace_id)
        subject = p.orch._core.subject(T.TASK, routed=routed)
        await p.orch_bus.publish(subject, task)
        await p.orch_bus.publish(subject, task)  # the same Signal again: same id
        with anyio.fail_after(10):
            reply = await pw.wait()
        await pw.close()
        assert reply.parent_id == task.id
        # a marker after both copies, down the same subscription: once it is answered the
        # second copy has been routed (and refused)
        marker = await p.orch.dispatch_and_wait(**target, input={"n": "marker"}, timeout_s=10)
        assert marker.payload["output"] == {"n": "marker"}
        assert neuron.runs.count(task.id) == 1
        assert len(outputs(p, task.trace_id)) == 1
        assert p.worker.stats.duplicate_tasks == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_copy_arriving_while_the_first_runs_is_not_run(kind: str, nats_url: str | None) -> None:
    neuron = Counting(hold=True)
    echo = Counting()
    async with pair(kind, nats_url, "redeliver2", [Axon("count", neuron), Axon("echo", echo)]) as p:
        task = await p.orch.dispatch_task(neuron="count", input={"n": 2})
        with anyio.fail_after(10):
            await neuron.started.wait()
        await p.orch_bus.publish(p.orch._core.subject(T.TASK), task)
        marker = await p.orch.dispatch_and_wait(neuron="echo", input={"n": "marker"}, timeout_s=10)
        assert marker.payload["output"] == {"n": "marker"}
        assert p.worker.stats.duplicate_tasks == 1
        neuron.release.set()
        await p.seen.wait_for(lambda s: any(x.type is T.AGENT_OUTPUT and x.parent_id == task.id for x in s))
        assert neuron.runs == [task.id]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_award_delivered_twice_runs_once(kind: str, nats_url: str | None) -> None:
    neuron = Counting()
    async with pair(kind, nats_url, "redeliver3", [Axon("count", neuron, ["count"])]) as p:
        pw = await p.orch.dispatch_offer(input={"n": 3}, capabilities=["count"], deadline_ms=5000)
        with anyio.fail_after(10):
            await pw.wait()
        award = next(s for s in p.seen.trace(pw.trace_id) if s.type is T.TASK_AWARDED)
        await p.orch_bus.publish(p.orch._core.subject(T.TASK_AWARDED), award)
        marker = await p.orch.dispatch_and_wait(neuron="count", input={"n": "marker"}, timeout_s=10)
        assert marker.payload["output"] == {"n": "marker"}
        assert len(neuron.runs) == 2  # the award's TASK once, and the marker
        assert p.worker.stats.duplicate_tasks == 1


def test_the_window_is_bounded_in_size_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(cosmonapse.ids.time, "monotonic", lambda: now[0])
    seen = SeenIds(max_entries=4, ttl_s=10.0)
    assert seen.first("a") and seen.first("b")  # b fills the first generation (4 / 2): retired
    assert not seen.first("a") and not seen.first("b")
    assert seen.first("c")  # the next generation; a and b are still known
    assert not seen.first("a") and not seen.first("c")
    assert seen.first("d")  # fills it: a and b (2 newer ids ago) are forgotten
    assert not seen.first("c") and not seen.first("d")
    assert seen.first("a") and len(seen) <= 4
    # time: an id is kept at least half the window and at most the window
    seen = SeenIds(max_entries=1000, ttl_s=10.0)
    assert seen.first("x")
    now[0] += 4.9
    assert "x" in seen and not seen.first("x")
    now[0] += 0.2  # 5.1 s: the generation holding x retired, still known
    assert seen.first("y") and "x" in seen
    now[0] += 5.0  # 10.1 s after x's generation began: forgotten
    assert "x" not in seen and "y" in seen
    now[0] += 3600  # a long quiet spell forgets everything
    assert "y" not in seen and len(seen) == 0
    for n in range(10_000):  # ids that never repeat keep it within max_entries
        now[0] += 0.001
        seen.first(f"z{n}")
    assert len(seen) <= 1000


def test_forget_undoes_first_in_either_generation() -> None:
    """The fast path remembers a TASK before it knows a runner takes it: refused, it forgets."""
    seen = SeenIds(max_entries=4, ttl_s=10.0)
    assert seen.first("a")
    seen.forget("a")
    assert seen.first("a")  # offered again (by the pump): runs
    assert seen.first("b")  # fills the generation: a and b retire into the previous one
    seen.forget("b")
    assert "b" not in seen and "a" in seen
    seen.forget("never-seen")  # nothing to undo: no error
    assert len(seen) == 1
