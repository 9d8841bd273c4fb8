"""Late joiners and live registrations (issue 11, items 1 and 2), on every bus.

* A Dendrite that cares who is there sends DISCOVER once its subscriptions are in
  place, and again when a roster handler is registered while it runs: whatever
  the start order, ``on_register_signal``, ``capability=`` filters and registry
  stores know the workers within a second — heartbeats are 30 s away here.
* A registration made on a running Dendrite is live for the next publish of any
  Dendrite on its synapse: seed 000's ``on_trace`` + ``dispatch_and_wait``,
  ``subscribe()``, ``add_axon`` and ``ensure_subscribed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from bus_kit import KINDS, open_bus, settle

from cosmonapse import (
    Axon,
    Dendrite,
    MemoryRegistryStore,
    MemorySynapse,
    NeuronContext,
    Signal,
    SignalType,
    Synapse,
    new_trace_id,
)
from cosmonapse.testing.harness import SignalRecorder

pytestmark = pytest.mark.anyio
T = SignalType


async def chat(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    await context.emit_thought_delta("hm ")
    return {"response": "hi"}


class Changes:
    """A hook that notes each call; ``until(check)`` waits, on those calls, for an async check to hold."""

    def __init__(self) -> None:
        self._changed = anyio.Event()

    def __call__(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, check: Callable[[], Awaitable[object]]) -> None:
        while True:
            changed = self._changed
            if await check():
                return
            await changed.wait()


def a_worker(synapse: Synapse, **kw: Any) -> Dendrite:
    """Seed 000's worker (heartbeats at the default 30 s: only DISCOVER can introduce it quickly)."""
    worker = Dendrite(synapse=synapse, namespace="late", role="worker", dendrite_id="worker", **kw)
    worker.attach_axon(Axon("worker", chat, capabilities=["text-generation", "chat"]))
    return worker


@asynccontextmanager
async def connections(kind: str, nats_url: str | None, count: int) -> AsyncIterator[list[Synapse]]:
    async with open_bus(kind, nats_url) as make, AsyncExitStack() as stack:
        buses = [make() for _ in range(count)]
        for syn in buses:
            await syn.connect()
            stack.push_async_callback(syn.close)
        yield buses


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["worker first", "orchestrator first"])
async def test_rosters_filters_and_stores_are_warm_within_a_second_in_any_start_order(
    kind: str, nats_url: str | None, order: str
) -> None:
    async with connections(kind, nats_url, 2) as (worker_bus, orch_bus):
        worker = a_worker(worker_bus)
        store = MemoryRegistryStore()
        orch = Dendrite(synapse=orch_bus, namespace="late", dendrite_id="orch", registry_store=store)
        joined, generated, mirrored = SignalRecorder(), SignalRecorder(), Changes()
        orch.on_refresh(mirrored)  # the registry mirror refreshes after each presence Signal it applied
        orch.on_register_signal(joined)
        orch.on_agent_output(capability="text-generation")(generated)
        first, second = (worker, orch) if order == "worker first" else (orch, worker)
        async with first:
            await settle(worker_bus)
            async with second:
                with anyio.fail_after(1):
                    await joined.wait_for(lambda sigs: any(s.neuron == "worker" for s in sigs))
                    await mirrored.until(lambda: orch.find_neurons(capability="chat"))
                assert [r.neuron_id for r in await orch.find_neurons(capability="chat")] == ["worker"]
                reply = await orch.dispatch_and_wait(neuron="worker", input={"prompt": "x"}, timeout_s=10)
                await generated.wait_for(lambda sigs: any(s.id == reply.id for s in sigs))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_roster_handler_registered_on_a_running_orchestrator_hears_who_is_already_there(
    kind: str, nats_url: str | None
) -> None:
    """Seed 000 attaches its decorators after connecting: the worker was there long before."""
    async with connections(kind, nats_url, 2) as (worker_bus, orch_bus):
        orch = Dendrite(synapse=orch_bus, namespace="late", dendrite_id="flask-orchestrator")
        async with a_worker(worker_bus), orch:
            joined = SignalRecorder()
            orch.on_register_signal(joined)  # plain call on a running Dendrite: DISCOVER follows
            orch.on_heartbeat_signal(SignalRecorder())  # registered in the same breath: one DISCOVER
            with anyio.fail_after(1):
                sigs = await joined.wait_for(lambda sigs: any(s.neuron == "worker" for s in sigs))
            assert sigs[0].payload["capabilities"] == ["chat", "text-generation"]


async def test_who_sends_discover_at_start() -> None:
    async with MemorySynapse() as syn:
        discovers = SignalRecorder()
        await syn.subscribe("cosmonapse.who.DISCOVER", discovers)  # one pump: in publish order
        # a worker that only serves has no use for a roster: it sends none
        quiet = Dendrite(synapse=syn, namespace="who", role="worker", dendrite_id="quiet")
        quiet.attach_axon(Axon("q", chat))
        # nor does an orchestrator that keeps no roster (it asks when a dispatch times out)
        bare = Dendrite(synapse=syn, namespace="who", dendrite_id="bare")
        # a worker with a capability filter, and an orchestrator with a store, need to know who is there
        curious = Dendrite(synapse=syn, namespace="who", role="worker", dendrite_id="curious")
        curious.on_agent_output(capability="chat")(SignalRecorder())
        orch = Dendrite(
            synapse=syn, namespace="who", dendrite_id="orch", registry_store=MemoryRegistryStore()
        )
        async with quiet, bare, curious, orch:
            fence = Signal(type=T.DISCOVER, payload={"neuron": "nobody"})
            await syn.publish("cosmonapse.who.DISCOVER", fence)
            sigs = await discovers.wait_for(lambda sigs: fence in sigs)
            assert len(sigs) == 3  # curious's and orch's, then the fence
            await bare.dispatch_and_wait(neuron="q", input={})  # the happy path asks nothing either
            later = Signal(type=T.DISCOVER, payload={"neuron": "nobody"})
            await syn.publish("cosmonapse.who.DISCOVER", later)
            assert len(await discovers.wait_for(lambda sigs: later in sigs)) == 4


async def test_seed_000_on_trace_then_dispatch_and_wait_sees_every_signal_of_the_trace() -> None:
    async with MemorySynapse() as syn:
        worker = a_worker(syn, heartbeat_s=0)
        orch = Dendrite(synapse=syn, namespace="late", dendrite_id="flask-orchestrator")
        async with worker, orch:
            for _ in range(10):
                trace_id = new_trace_id()
                seen = SignalRecorder()
                orch.on_trace(trace_id)(seen)  # seed 000: @orchestrator.on_trace(trace_id) ...
                reply = await orch.dispatch_and_wait(  # ... then at once dispatch_and_wait
                    neuron="worker", input={"prompt": "x"}, trace_id=trace_id, timeout_s=10
                )
                await seen.wait_for(lambda sigs, reply=reply: reply in sigs)
                assert [s.type for s in seen.signals] == [T.TASK, T.THOUGHT_DELTA, T.AGENT_OUTPUT]


@pytest.mark.parametrize("kind", KINDS)
async def test_subscribe_and_add_axon_are_live_when_they_return(kind: str, nats_url: str | None) -> None:
    async with connections(kind, nats_url, 2) as (worker_bus, orch_bus):
        worker = Dendrite(synapse=worker_bus, namespace="live", role="worker", heartbeat_s=0)
        orch = Dendrite(synapse=orch_bus, namespace="live", heartbeat_s=0)
        async with worker, orch:
            audits = SignalRecorder()
            sub = await worker.subscribe(T.AUDIT, audits)
            await settle(worker_bus)
            await orch.emit(Signal(type=T.AUDIT, payload={"kind": "k"}))
            await audits.wait_for(count=1)
            await sub.unsubscribe()
            await worker.add_axon(Axon("late", chat, capabilities=["chat"]))
            await settle(worker_bus)
            reply = await orch.dispatch_and_wait(capabilities=["chat"], input={}, timeout_s=10)
            assert reply.neuron == "late"


async def test_ensure_subscribed_makes_a_handler_live_for_signals_from_elsewhere() -> None:
    """A raw ``synapse.publish`` (another process, another SDK) does not wait for our subscriptions."""
    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="ens", role="worker", heartbeat_s=0)
        async with worker:
            plans = SignalRecorder()
            worker.on_plan(plans)
            await worker.ensure_subscribed(T.PLAN)
            sig = Signal(type=T.PLAN, payload={"steps": []})
            await syn.publish("cosmonapse.ens.PLAN", sig)
            assert [s.id for s in await plans.wait_for(count=1)] == [sig.id]
            worker.on_consensus(SignalRecorder())
            await worker.ensure_subscribed()  # no types: every pending subscription
            assert not worker._core._missing()
