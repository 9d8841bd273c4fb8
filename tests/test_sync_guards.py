"""Calls that would deadlock raise DeadlockError pointing to the async API instead of hanging."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from cosmonapse import Axon, Signal, SignalType, new_trace_id
from cosmonapse_sync import DeadlockError, SyncDendrite


@pytest.fixture(params=["asyncio", "trio"])
def facade(request: pytest.FixtureRequest) -> Iterator[SyncDendrite]:
    f = SyncDendrite("memory://", backend=request.param, namespace="guards")

    def echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
        return input

    f.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
    with f:
        yield f


def test_from_the_portal_thread(facade: SyncDendrite) -> None:
    caught: list[BaseException] = []
    done = threading.Event()

    @facade.on_agent_output
    async def calls_back_in(sig: Signal) -> None:  # async handlers run on the portal thread
        try:
            facade.dispatch_task(neuron="echo", input={})
        except BaseException as exc:
            caught.append(exc)
        finally:
            done.set()

    facade.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
    assert done.wait(10)
    assert isinstance(caught[0], DeadlockError)
    assert "own event loop thread" in str(caught[0])
    assert "await facade.dendrite.dispatch_task" in str(caught[0])


def test_from_a_thread_running_asyncio(facade: SyncDendrite) -> None:
    async def main() -> None:
        facade.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)

    with pytest.raises(DeadlockError, match="running a asyncio event loop") as info:
        asyncio.run(main())
    assert "await dendrite.dispatch_and_wait" in str(info.value)


def test_from_a_thread_running_trio(facade: SyncDendrite) -> None:
    async def main() -> None:
        facade.call(trio.sleep, 0)

    with pytest.raises(DeadlockError, match="trio event loop"):
        trio.run(main)


def test_a_lazy_start_from_a_loop_thread_is_refused_too() -> None:
    f = SyncDendrite("memory://", namespace="lazy")

    async def main() -> None:
        f.start()

    try:
        with pytest.raises(DeadlockError):
            asyncio.run(main())
        assert not f.running
    finally:
        f.close()


def test_sync_handlers_and_neurons_may_call_the_facade(facade: SyncDendrite) -> None:
    """They run in worker threads, not on a loop: blocking there is fine."""
    answers: list[Signal] = []
    done = threading.Event()

    @facade.on_final
    def follow_up(sig: Signal) -> None:
        answers.append(facade.dispatch_and_wait(neuron="echo", input={"again": True}, timeout_s=10))
        done.set()

    facade.dispatch_and_wait(neuron="echo", input={}, scope="terminal", timeout_s=10)
    assert done.wait(10)
    assert answers[0].payload["output"] == {"again": True}


def test_a_pathway_read_from_the_portal_thread_points_to_the_async_pathway(facade: SyncDendrite) -> None:
    caught: list[BaseException] = []
    done = threading.Event()
    trace = new_trace_id()
    pathway = facade.observe_pathway(trace)  # open before the TASK goes out: nothing is missed

    @pathway.on(SignalType.AGENT_OUTPUT)
    async def reads_back(sig: Signal) -> None:
        try:
            pathway.wait(timeout_s=1)
        except BaseException as exc:
            caught.append(exc)
        finally:
            done.set()

    facade.dispatch_task(neuron="echo", input={}, trace_id=trace)
    assert done.wait(10)
    pathway.close()
    assert isinstance(caught[0], DeadlockError)
    assert "await pathway.aio.wait(...)" in str(caught[0])
