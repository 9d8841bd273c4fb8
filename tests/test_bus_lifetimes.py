"""Synapse lifetimes any task can drive (issue 10, item 2, bus part), on all three buses.

A synapse's task group is hosted by a root task of its own, so ``connect()`` and
``close()`` work from any task, in any order across synapses and inside
``fail_after``; a background failure is raised by the next call and by ``close()``.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from bus_kit import KINDS, no_client_tasks_left, open_bus, settle
from nats_util import Inbox

from cosmonapse import Signal, SignalType, Synapse, SynapseClosedError, SynapseFailedError, connect_synapse
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio


def sig(n: int = 0) -> Signal:
    return Signal(type=SignalType.TASK, payload={"n": n})


async def round_trip(syn: Synapse, subject: str) -> None:
    """The synapse still works: what it publishes comes back to its own subscription."""
    inbox = Inbox()
    sub = await syn.subscribe(subject, inbox)
    await settle(syn)
    await syn.publish(subject, sig(7))
    assert [s.payload["n"] for s in await inbox.wait_for(1)] == [7]
    await syn.unsubscribe(sub)


def fresh(kind: str, make: object) -> Synapse:
    """A new synapse (the memory kit shares one instance; lifetimes need three of their own)."""
    if kind == "memory":
        from cosmonapse import MemorySynapse

        return MemorySynapse()
    assert callable(make)
    return make()


@pytest.mark.parametrize("kind", KINDS)
async def test_three_synapses_closed_in_the_order_they_were_connected(
    kind: str, nats_url: str | None
) -> None:
    async with open_bus(kind, nats_url) as make, no_client_tasks_left():
        synapses = [fresh(kind, make) for _ in range(3)]
        for syn in synapses:
            await syn.connect()
        for i, syn in enumerate(synapses):
            await round_trip(syn, f"life.fifo{i}")
        for syn in synapses:  # FIFO, not LIFO
            with anyio.fail_after(10):
                await syn.close()
            assert not syn.connected


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_in_one_task_close_in_another(kind: str, nats_url: str | None) -> None:
    async with open_bus(kind, nats_url) as make, no_client_tasks_left():
        syn = fresh(kind, make)
        async with anyio.create_task_group() as tg:
            tg.start_soon(syn.connect)
        await round_trip(syn, "life.tasks")
        async with anyio.create_task_group() as tg:
            tg.start_soon(syn.close)
        assert not syn.connected
        with pytest.raises(SynapseClosedError):
            await syn.publish("life.tasks", sig())


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_synapse_inside_fail_after(kind: str, nats_url: str | None) -> None:
    async with DevSynapseServer() as server:
        url = {"memory": "memory://", "cosmo": server.url, "nats": nats_url}[kind]
        assert url is not None
        with anyio.fail_after(10):
            syn = await connect_synapse(url)
        # The deadline's scope has exited: the synapse is not bound to it.
        try:
            await round_trip(syn, "life.deadline")
        finally:
            with anyio.fail_after(10):
                await syn.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_close_from_a_cancelled_scope_still_closes(kind: str, nats_url: str | None) -> None:
    async with open_bus(kind, nats_url) as make, no_client_tasks_left():
        syn = fresh(kind, make)
        await syn.connect()
        await round_trip(syn, "life.cancelled")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await syn.close()
        assert not syn.connected


async def ended(syn: Synapse) -> None:
    """Wait until the synapse's root task has ended (its group failed)."""
    host = syn._host  # the test looks inside: no public event marks a crash
    assert host is not None
    await host.wait_ended()


class Boom(BaseException):
    """Not an Exception: the pump does not catch it, so the synapse's group fails."""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_background_failure_is_raised_by_the_next_call(
    kind: str, nats_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_bus(kind, nats_url) as make:
        syn = fresh(kind, make)
        await syn.connect()

        async def explode(s: Signal) -> None:
            raise Boom("handler blew up")

        await syn.subscribe("life.boom", explode)
        await settle(syn)
        with caplog.at_level(logging.ERROR, logger="cosmonapse.taskhost"):
            await syn.publish("life.boom", sig())
            with anyio.fail_after(10):
                await ended(syn)
        assert any("background task failed" in r.getMessage() for r in caplog.records)
        with pytest.raises(SynapseFailedError) as info:
            await syn.publish("life.boom", sig())
        assert isinstance(info.value.__cause__, Boom)
        with pytest.raises(SynapseFailedError):
            await syn.subscribe("life.other", Inbox())
        await syn.close()  # already reported by a call: close() is quiet
        assert not syn.connected


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unreported_background_failure_is_raised_by_close(kind: str, nats_url: str | None) -> None:
    async with open_bus(kind, nats_url) as make:
        syn = fresh(kind, make)
        await syn.connect()
        failed = anyio.Event()

        async def explode(s: Signal) -> None:
            failed.set()
            raise Boom("handler blew up")

        await syn.subscribe("life.boom2", explode)
        await settle(syn)
        await syn.publish("life.boom2", sig())
        with anyio.fail_after(10):
            await failed.wait()
        with pytest.raises(SynapseFailedError) as info, anyio.fail_after(10):
            await syn.close()
        assert isinstance(info.value.__cause__, Boom)
        await syn.close()  # idempotent
        await syn.connect()  # and usable again
        await round_trip(syn, "life.again")
        await syn.close()
