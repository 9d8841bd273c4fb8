"""The core and its services: the routing table, live registrations, control before data."""

from __future__ import annotations

import contextvars
from typing import Any

import anyio
import pytest

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext, Signal, SignalType
from cosmonapse.core import Core, Service
from cosmonapse.signal import PATHWAY_TYPES
from cosmonapse.testing.harness import SignalRecorder, assert_no_leaked_tasks, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType

SEEN_BY: contextvars.ContextVar[str] = contextvars.ContextVar("seen_by", default="nobody")


async def echo(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    return input


def test_the_router_is_a_table_built_from_the_services_declarations() -> None:
    d = Dendrite(synapse=MemorySynapse(), role="worker")
    table = d._core._table
    # every Pathway type goes to the core's own delivery first (ops, then Pathways)
    assert all(table[t][0] == d._core._deliver for t in PATHWAY_TYPES)
    assert table[T.STOP][1] == d._stops._on_stop
    assert table[T.TASK] == (d._hosting._on_task,)
    assert T.PLAN not in table or table[T.PLAN] == (d._core._deliver,)  # nobody handles PLAN yet

    @d.on_plan
    def plan(sig: Signal) -> None: ...

    assert table is not d._core._table and d._core._table[T.PLAN][-1] == d._handlers._dispatch
    assert T.PLAN in d._core._wanted  # ... and a worker subscribes what it routes


def test_a_service_declares_routes_and_wants_and_the_core_builds_them_in_order() -> None:
    calls: list[str] = []

    class First(Service):
        def routes(self) -> list[tuple[SignalType, Any]]:
            return [(T.AUDIT, self.on_audit)]

        def wanted(self) -> list[SignalType]:
            return [T.AUDIT]

        async def on_audit(self, sig: Signal) -> None:
            calls.append("first")

    class Second(First):
        async def on_audit(self, sig: Signal) -> None:
            calls.append("second")

    core = Core(
        MemorySynapse(), namespace="n", dendrite_id="d", role="worker", max_concurrent_tasks=1,
        max_concurrent_handlers=1, pathway_buffer=8, shutdown_timeout_s=1, tombstones=set(),
    )  # fmt: skip
    first, second = First(), Second()
    core.add_service(first)
    core.add_service(second)
    assert core._table[T.AUDIT] == (core._deliver, first.on_audit, second.on_audit)
    assert core._wanted == {T.AUDIT}


async def test_a_handler_registered_on_a_running_dendrite_is_subscribed_before_the_next_publish() -> None:
    """Issue 11: a worker's handler registered after start() hears the very next PLAN an
    orchestrator on the same synapse publishes, every time (the publish makes it first)."""
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        for round in range(10):
            worker = Dendrite(synapse=syn, namespace=f"live{round}", role="worker", heartbeat_s=0)
            orch = Dendrite(synapse=syn, namespace=f"live{round}", heartbeat_s=0)
            async with worker, orch:
                seen = SignalRecorder()
                worker.on_signal(SignalType.PLAN, seen)  # sync: the subscription is made later ...
                await orch.emit_plan(trace_id="trc_1", parent_id=None, steps=["a"])  # ... or here
                await seen.wait_for(count=1)
                assert [s.payload["steps"] for s in seen.signals] == [["a"]]


async def test_handlers_do_not_see_each_others_context_variables() -> None:
    seen: list[str] = []
    done = anyio.Event()
    async with MemorySynapse() as syn:
        d = Dendrite(synapse=syn, namespace="ctx", max_concurrent_handlers=1)  # one runner for both

        @d.on_plan
        def first(sig: Signal) -> None:
            seen.append(SEEN_BY.get())
            SEEN_BY.set("first handler")

        @d.on_final
        def second(sig: Signal) -> None:
            seen.append(SEEN_BY.get())
            done.set()

        async with d:
            await d.emit_plan(trace_id="trc_1", parent_id=None, steps=[])
            await d.emit_final(trace_id="trc_1", parent_id=None, result={})
            with anyio.fail_after(5):
                await done.wait()
    assert seen == ["nobody", "nobody"]


async def test_stop_is_not_held_up_by_tasks_queued_for_a_full_task_pool() -> None:
    """Control before data: with the one task runner busy and TASKs queued behind it,
    a STOP still cancels the running TASK and is acknowledged, and no queued TASK
    of the stopped trace ever runs."""
    started: list[str] = []
    entered = anyio.Event()
    cancelled = anyio.Event()

    async def hold(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        started.append(input["n"])
        entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    axons = [Axon(neuron_id="hold", neuron_fn=hold), Axon(neuron_id="echo", neuron_fn=echo)]
    async with memory_cluster(axons=axons, worker_kw={"max_concurrent_tasks": 1}) as c:
        first = await c.orchestrator.dispatch_task(neuron="hold", input={"n": "first"})
        with anyio.fail_after(5):
            await entered.wait()
        for n in range(20):  # a backlog: the worker's TASK pump waits for the runner
            await c.orchestrator.dispatch_task(neuron="hold", input={"n": n}, trace_id=first.trace_id)
        with anyio.fail_after(5):
            ack = await c.orchestrator.stop_and_confirm(first.trace_id, timeout_s=5)
            await cancelled.wait()
        assert ack is not None and ack.payload["node"] == "worker" and ack.payload["cancelled"] == 1
        # the backlog drains without running any TASK of the stopped trace (one runner: in order)
        reply = await c.orchestrator.dispatch_and_wait(neuron="echo", input={"n": "after"}, timeout_s=5)
        assert reply.payload["output"] == {"n": "after"}
    assert started == ["first"]
