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


async def test_a_handed_back_task_goes_to_its_own_group_only(bus: Callable[[], Any]) -> None:
    """Workers with different capability sets are different queue groups; a hand-back never multiplies.

    A routed TASK reaches one member of every group whose capabilities cover it (so
    it runs once per group, as before load shedding); the full worker hands its copy
    back to its own group only — here itself, so it comes back ``MAX_DECLINES``
    times and then waits — and the other group's worker runs its copy once.
    """
    sa, sb, so = bus(), bus(), bus()
    hog = Gate()
    ran = {"a": 0, "b": 0}

    def work(name: str) -> Any:
        async def neuron(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
            ran[name] += 1
            return {"by": name}

        return neuron

    async with connected(sa, sb, so):
        a = Dendrite(synapse=sa, namespace="groups", role="worker", heartbeat_s=0, max_concurrent_tasks=1)
        a.attach_axon(Axon("hog-a", hog, ["extra"]))
        a.attach_axon(Axon("work-a", work("a"), ["work"]))
        b = Dendrite(synapse=sb, namespace="groups", role="worker", heartbeat_s=0)
        b.attach_axon(Axon("work-b", work("b"), ["work"]))
        orch = Dendrite(synapse=so, namespace="groups", heartbeat_s=0)
        async with a, b, orch:
            await flush(sa, sb)
            held = await orch.dispatch(neuron="hog-a", input={})
            await hog.wait_inside(1)
            pw = await orch.dispatch(capabilities=["work"], input={})
            assert (await pw.wait(timeout_s=5)).payload["output"] == {"by": "b"}
            with anyio.fail_after(10):
                while a.task_load.waited < 1:
                    await flush(so, sa)
                    await anyio.sleep(0.01)  # allowed: polling a counter of another connection, bounded
            assert a.task_load.declined == MAX_DECLINES  # not multiplied by the number of groups
            assert ran == {"a": 0, "b": 1}
            hog.release.set()
            await held.wait(timeout_s=5)
            with anyio.fail_after(5):
                while ran["a"] < 1:
                    await flush(sa)
                    await anyio.sleep(0.01)  # allowed: the waiting copy runs once the hog is gone, bounded
            pw._close_now()
            assert ran == {"a": 1, "b": 1}


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


@pytest.mark.slow
async def test_a_worker_killed_mid_load_costs_no_call(nats_url: str | None, anyio_backend: str) -> None:
    """Three worker processes behind ``work``; one is SIGKILLed a third of the way in; every call succeeds."""
    if nats_url is None:
        pytest.skip("nats-server not installed")
    from nats_util import Inbox
    from nats_worker import WorkerProcess

    from cosmonapse import RetryStrategy

    ns = f"killed{anyio_backend}"
    workers = [WorkerProcess(nats_url, ns, f"w{i}", "none", "-", anyio_backend, limit=5) for i in range(3)]
    calls, in_flight = 600, 30
    by: dict[str, int] = {}
    failures: list[BaseException] = []
    third = anyio.Event()
    async with NatsSynapse(nats_url) as osyn:
        registers = Inbox()
        await osyn.subscribe(f"cosmonapse.{ns}.REGISTER", registers)
        await osyn.flush()
        try:
            for worker in workers:
                await worker.start(registers)
            async with Dendrite(synapse=osyn, namespace=ns, heartbeat_s=0) as orch:
                started = 0

                async def client() -> None:
                    nonlocal started
                    while started < calls:
                        started += 1
                        if started == calls // 3:
                            third.set()
                        try:
                            retry = RetryStrategy(max_attempts=5, timeout_s=1)
                            reply = await orch.dispatch_and_wait(capabilities=["work"], input={}, retry=retry)
                        except Exception as exc:
                            failures.append(exc)
                            continue
                        who = reply.payload["output"]["by"]
                        by[who] = by.get(who, 0) + 1

                with anyio.fail_after(90):
                    async with anyio.create_task_group() as tg:
                        for _ in range(in_flight):
                            tg.start_soon(client)
                        await third.wait()
                        await workers[0].kill()
            assert failures == []
            assert sum(by.values()) == calls
            assert by.get("w0", 0) > 0 and by.get("w1", 0) > 0 and by.get("w2", 0) > 0
        finally:
            for worker in workers:
                await worker.stop()
