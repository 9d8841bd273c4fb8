"""Workers that shed load: a full worker hands capability-routed TASKs back to its queue group.

On the in-process bus and on NATS (each worker its own connection, as on its
own machine): a worker whose task pool is full declines routed TASKs, so the
group's idle member runs them all and nobody times out; when every member is
full, a TASK is handed back at most ``MAX_DECLINES`` times and then waits;
addressed TASKs to a full worker wait, and those of a trace STOPped meanwhile
never start.  The default limit holds 10,000 concurrently running Neuron calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext, Synapse
from cosmonapse.hosting import MAX_DECLINES
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "nats"])
def bus(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """A factory of synapses that share one bus (one per simulated machine on NATS)."""
    if request.param == "memory":
        shared = MemorySynapse()
        return lambda: shared
    url = request.getfixturevalue("nats_url")
    if url is None:
        pytest.skip("nats-server not installed")
    return lambda: NatsSynapse(url)


@asynccontextmanager
async def connected(*synapses: Synapse) -> AsyncIterator[None]:
    unique = list(dict.fromkeys(synapses))
    for syn in unique:
        await syn.connect()
    try:
        yield
    finally:
        for syn in unique:
            await syn.close()


class Gate:
    """A Neuron that blocks until released, counting calls and how many are inside."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.calls = 0
        self.inside = 0
        self._entered = anyio.Event()

    async def __call__(self, input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        self.calls += 1
        self.inside += 1
        self._entered.set()
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        return {"ok": True}

    async def wait_inside(self, n: int) -> None:
        with anyio.fail_after(10):
            while self.inside < n:
                self._entered = anyio.Event()
                await self._entered.wait()


async def flush(*synapses: Synapse) -> None:
    for syn in synapses:
        if isinstance(syn, NatsSynapse):
            await syn.flush()


async def test_a_full_worker_hands_routed_tasks_to_the_idle_member(bus: Callable[[], Any]) -> None:
    sa, sb, so = bus(), bus(), bus()
    hog = Gate()
    ran: dict[str, int] = {"a": 0, "b": 0}

    def work(name: str) -> Any:
        async def neuron(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
            ran[name] += 1
            return {"by": name}

        return neuron

    async with connected(sa, sb, so):
        a = Dendrite(synapse=sa, namespace="shed", role="worker", dendrite_id="a", heartbeat_s=0,
                     max_concurrent_tasks=2)  # fmt: skip
        a.attach_axon(Axon("hog-a", hog))
        a.attach_axon(Axon("work-a", work("a"), ["work"]))
        b = Dendrite(synapse=sb, namespace="shed", role="worker", dendrite_id="b", heartbeat_s=0)
        b.attach_axon(Axon("work-b", work("b"), ["work"]))
        orch = Dendrite(synapse=so, namespace="shed", heartbeat_s=0)
        async with a, b, orch:
            await flush(sa, sb)
            hogs = [await orch.dispatch(neuron="hog-a", input={}) for _ in range(2)]
            await hog.wait_inside(2)
            assert a.task_load.saturated
            with anyio.fail_after(20):
                replies = [
                    await orch.dispatch_and_wait(capabilities=["work"], input={"i": i}, timeout_s=5)
                    for i in range(20)
                ]
            assert [r.payload["output"]["by"] for r in replies] == ["b"] * 20
            assert ran == {"a": 0, "b": 20}
            load = a.task_load
            assert load.declined >= 1 and load.waited == 0 and load.running == 2 and load.limit == 2
            hog.release.set()
            for pw in hogs:
                await pw.wait(timeout_s=5)
            assert not a.task_load.saturated


async def test_when_every_member_is_full_a_routed_task_is_handed_back_a_few_times_then_waits(
    bus: Callable[[], Any],
) -> None:
    sw, so = bus(), bus()
    hog = Gate()
    async with connected(sw, so):
        w = Dendrite(synapse=sw, namespace="full", role="worker", heartbeat_s=0, max_concurrent_tasks=1)
        w.attach_axon(Axon("hog", hog))
        w.attach_axon(Axon("work", lambda i, c: {"done": True}, ["work"]))
        orch = Dendrite(synapse=so, namespace="full", heartbeat_s=0)
        async with w, orch:
            await flush(sw)
            held = await orch.dispatch(neuron="hog", input={})
            await hog.wait_inside(1)
            pw = await orch.dispatch(capabilities=["work"], input={})
            with anyio.fail_after(10):
                while w.task_load.waited < 1:
                    await flush(so, sw)
                    await anyio.sleep(0.01)  # allowed: polling a counter of another connection, bounded
            assert w.task_load.declined == MAX_DECLINES
            hog.release.set()
            assert (await pw.wait(timeout_s=5)).payload["output"] == {"done": True}
            await held.wait(timeout_s=5)


async def test_waiting_tasks_of_a_stopped_trace_never_start(bus: Callable[[], Any]) -> None:
    sw, so = bus(), bus()
    hog = Gate()
    later = Gate()
    later.release.set()
    async with connected(sw, so):
        w = Dendrite(synapse=sw, namespace="wait", role="worker", heartbeat_s=0, max_concurrent_tasks=1)
        w.attach_axon(Axon("hog", hog))
        w.attach_axon(Axon("later", later))
        orch = Dendrite(synapse=so, namespace="wait", heartbeat_s=0)
        async with w, orch:
            await flush(sw)
            held = await orch.dispatch(neuron="hog", input={})
            await hog.wait_inside(1)
            doomed = await orch.dispatch(neuron="later", input={})
            for _ in range(3):
                await orch.dispatch_task(neuron="later", input={}, trace_id=doomed.trace_id)
            with anyio.fail_after(10):
                while w.task_load.waited < 1:
                    await flush(so, sw)
                    await anyio.sleep(0.01)  # allowed: polling a counter of another connection, bounded
            await orch.stop_trace(doomed.trace_id)
            with anyio.fail_after(10):
                while not w.is_stopped(doomed.trace_id):
                    await flush(so, sw)
                    await anyio.sleep(0.01)  # allowed: the worker hears the STOP on its own connection
            hog.release.set()
            await held.wait(timeout_s=5)
            control = await orch.dispatch_and_wait(neuron="later", input={}, timeout_s=5)
            assert control.payload["output"] == {"ok": True}
            assert later.calls == 1  # only the control: the four waiting TASKs of the STOPped trace never ran
            assert w.task_load.refused_stopped == 4


@pytest.mark.slow
async def test_the_default_limit_holds_ten_thousand_running_calls() -> None:
    n = 10_000
    gate = Gate()
    async with MemorySynapse(subscription_buffer=n) as syn:
        w = Dendrite(synapse=syn, namespace="many", role="worker", heartbeat_s=0)
        w.attach_axon(Axon("io", gate))
        orch = Dendrite(synapse=syn, namespace="many", heartbeat_s=0)
        async with w, orch:
            assert w.task_load.limit == 10_000
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await orch.dispatch_and_wait(neuron="io", input={}, timeout_s=60)
                except Exception as exc:
                    errors.append(exc)

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(call)
                    await gate.wait_inside(n)  # all 10,000 are running at once
                    assert w.task_load.running == n and w.task_load.waited == 0
                    gate.release.set()
            assert errors == []
