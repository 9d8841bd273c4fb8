"""A Dendrite's lifetime belongs to the Dendrite, not to the task that started it.

``start()``/``stop()`` from different tasks, in any order, inside timeouts and
cancelled scopes; a failing ``start()`` cleans up and raises; a background
failure is raised by the next call and by ``stop()``; a closed synapse gives a
clear error.  Every test runs on asyncio and trio and checks no task is left.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus

from cosmonapse import (
    Axon,
    Dendrite,
    DendriteProtocolError,
    MemorySynapse,
    NeuronContext,
    Signal,
    SynapseClosedError,
)
from cosmonapse.taskhost import TaskHostFailed
from cosmonapse.testing.harness import assert_no_leaked_tasks

pytestmark = pytest.mark.anyio


async def echo(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    return input


def pair(syn: MemorySynapse, ns: str = "life") -> tuple[Dendrite, Dendrite]:
    worker = Dendrite(synapse=syn, namespace=ns, role="worker", dendrite_id="w", heartbeat_s=0)
    worker.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
    return worker, Dendrite(synapse=syn, namespace=ns, dendrite_id="o", heartbeat_s=0)


async def test_start_in_one_task_stop_in_another() -> None:
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        worker, orch = pair(syn)
        async with anyio.create_task_group() as tg:  # a fixture's set-up task, say
            tg.start_soon(worker.start)
            tg.start_soon(orch.start)
        reply = await orch.dispatch_and_wait(neuron="echo", input={"x": 1}, timeout_s=5)
        assert reply.payload["output"] == {"x": 1}
        async with anyio.create_task_group() as tg:  # ... and its tear-down task
            tg.start_soon(orch.stop)
            tg.start_soon(worker.stop)
        assert not orch.running and not worker.running


async def test_three_dendrites_stopped_in_the_order_they_started() -> None:
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        dendrites = [Dendrite(synapse=syn, namespace="fifo", dendrite_id=f"d{i}") for i in range(3)]
        for d in dendrites:
            await d.start()
        for d in dendrites:  # FIFO: a task group entered per start() would break here
            with anyio.fail_after(5):
                await d.stop()


async def test_start_inside_fail_after_outlives_the_scope() -> None:
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        worker, orch = pair(syn)
        with anyio.fail_after(5):
            await worker.start()
            await orch.start()
        # the scopes that surrounded start() are gone; the Dendrites still work
        reply = await orch.dispatch_and_wait(neuron="echo", input={}, timeout_s=5)
        assert reply.neuron == "echo"
        await orch.stop()
        await worker.stop()


async def test_stop_from_a_cancelled_scope_still_stops_everything() -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    async def forever(input: dict[str, Any], context: NeuronContext) -> Any:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        worker = Dendrite(synapse=syn, namespace="cx", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon(neuron_id="forever", neuron_fn=forever))
        orch = Dendrite(synapse=syn, namespace="cx", heartbeat_s=0)
        await worker.start()
        await orch.start()
        await orch.dispatch_task(neuron="forever", input={})
        with anyio.fail_after(5):
            await started.wait()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await worker.stop()  # the caller is cancelled: stop still joins its tasks
        assert cancelled.is_set() and not worker.running
        await orch.stop()


async def test_a_stopped_dendrite_can_start_again() -> None:
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        worker, orch = pair(syn)
        for _ in range(2):
            async with worker, orch:
                reply = await orch.dispatch_and_wait(neuron="echo", input={}, timeout_s=5)
                assert reply.neuron == "echo"


async def test_start_on_a_synapse_never_connected_raises_at_once() -> None:
    orch = Dendrite(synapse=MemorySynapse(), dendrite_id="lonely")
    async with assert_no_leaked_tasks():
        with anyio.fail_after(5), pytest.raises(SynapseClosedError, match=r"lonely.*not connected"):
            await orch.start()
    assert not orch.running


async def test_start_on_a_closed_synapse_raises_at_once() -> None:
    syn = MemorySynapse()
    await syn.connect()
    await syn.close()
    orch = Dendrite(synapse=syn)
    with anyio.fail_after(5), pytest.raises(SynapseClosedError):
        await orch.start()


class FailingPublish(MemorySynapse):
    """Connected and subscribable, but publishing fails while ``broken`` (a cut link, say)."""

    broken = True

    async def publish(self, subject: str, signal: Signal) -> None:
        if self.broken:
            raise OSError("the wire is cut")
        await super().publish(subject, signal)


async def test_a_first_publish_that_fails_fails_start_and_cleans_up() -> None:
    async with FailingPublish() as syn, assert_no_leaked_tasks():
        worker, orch = pair(syn)
        with anyio.fail_after(5), pytest.raises(OSError, match="wire is cut"):
            await worker.start()  # REGISTER of its Axon is the first publish
        assert not worker.running
        assert not syn._active_subs  # everything it subscribed is gone again
        syn.broken = False  # the same Dendrite starts once the bus works
        async with worker, orch:
            reply = await orch.dispatch_and_wait(neuron="echo", input={}, timeout_s=5)
            assert reply.neuron == "echo"


class ServedNeuron:
    """A Neuron with a long-lived service (like an MCP session) that fails to come up."""

    async def __call__(self, input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        return {}

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.lowlevel.checkpoint()
        raise ConnectionError("the tool server is down")


async def test_a_neuron_service_that_fails_to_start_fails_start() -> None:
    async with MemorySynapse() as syn, assert_no_leaked_tasks():
        worker = Dendrite(synapse=syn, namespace="svc", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon(neuron_id="served", neuron_fn=ServedNeuron()))
        with anyio.fail_after(5), pytest.raises(ConnectionError, match="tool server is down"):
            await worker.start()
        assert not worker.running
        assert not syn._active_subs


async def test_using_a_dendrite_whose_synapse_was_closed_is_a_clear_error() -> None:
    syn = MemorySynapse()
    await syn.connect()
    orch = Dendrite(synapse=syn, dendrite_id="orphan")
    await orch.start()
    await syn.close()  # its owner closed the bus under it
    try:
        with pytest.raises(SynapseClosedError, match=r"orphan.*synapse is closed"):
            await orch.dispatch_task(neuron="x", input={})
    finally:
        with anyio.fail_after(5):
            await orch.stop()


async def test_a_background_failure_is_raised_by_the_next_call_and_by_stop() -> None:
    # the leak check outlives the synapse: its pumps end when it closes
    async with assert_no_leaked_tasks(), MemorySynapse() as syn:
        orch = Dendrite(synapse=syn, dendrite_id="broken")
        await orch.start()

        async def crash() -> None:
            raise RuntimeError("a bug in a background task")

        orch._core.start_service_task(crash, name="crash")
        with anyio.fail_after(5):
            assert orch._core._host is not None
            await orch._core._host.wait_ended()
        with pytest.raises(TaskHostFailed) as info:
            await orch.dispatch_task(neuron="x", input={})
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(TaskHostFailed):
            await orch.stop()
        await orch.stop()  # raised once; stopping again is quiet
        assert not orch.running


async def test_running_calls_refuse_before_start_and_after_stop() -> None:
    async with MemorySynapse() as syn:
        orch = Dendrite(synapse=syn)
        with pytest.raises(DendriteProtocolError, match="running"):
            await orch.dispatch_task(neuron="x", input={})
        async with orch:
            pass
        with pytest.raises(DendriteProtocolError, match="running"):
            await orch.dispatch_task(neuron="x", input={})
