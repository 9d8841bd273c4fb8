"""One bus of each kind for tests that must hold on all three: memory, cosmo:// and NATS.

``open_bus(kind, nats_url)`` yields a factory of *unconnected* synapses on one
bus: the shared in-process ``MemorySynapse``, a fresh ``DevSynapse`` per call
on a dev bus served in this task, or a fresh ``NatsSynapse`` per call on a
real nats-server.  ``settle(synapse)`` waits until everything the synapse sent
so far has been handled by its bus (NATS: PING/PONG; cosmo://: ``subscribe``
already waits for that; memory: nothing to wait for).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from nats_util import nats_server_binary

from cosmonapse import Axon, Dendrite, MemorySynapse, Synapse
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.synapse.nats import NatsSynapse
from cosmonapse.testing.harness import running_task_names

_needs_nats = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed")
#: ``@pytest.mark.parametrize("kind", ...)`` values: the network buses, and all three.
NETWORK = ["cosmo", pytest.param("nats", marks=_needs_nats)]
KINDS = ["memory", *NETWORK]


@asynccontextmanager
async def open_bus(
    kind: str, nats_url: str | None = None, **options: Any
) -> AsyncIterator[Callable[[], Synapse]]:
    """A factory of unconnected synapses sharing one bus of *kind* (``options`` go to each)."""
    if kind == "memory":
        shared = MemorySynapse()
        yield lambda: shared
    elif kind == "cosmo":
        async with DevSynapseServer() as server:
            yield lambda: DevSynapse(server.url, **options)
    elif kind == "nats":
        assert nats_url is not None, "a NATS test needs the nats_url fixture"
        yield lambda: NatsSynapse(nats_url, **options)
    else:
        raise ValueError(kind)


@asynccontextmanager
async def no_client_tasks_left() -> AsyncIterator[None]:
    """Fail if a task started in the block outlives it (the dev bus server's own tasks aside)."""
    before = set(running_task_names())
    yield
    left = {n for tid, n in running_task_names().items() if tid not in before and not n.startswith("dev-bus")}
    assert not left, f"tasks left running: {sorted(left)}"


async def settle(synapse: Synapse) -> None:
    """Everything *synapse* sent so far (subscriptions included) has reached its bus."""
    if isinstance(synapse, NatsSynapse):
        await synapse.flush()


@asynccontextmanager
async def two_dendrites(
    kind: str,
    nats_url: str | None,
    namespace: str,
    worker_axons: list[Axon],
    *,
    worker_kw: dict[str, Any] | None = None,
    orch_kw: dict[str, Any] | None = None,
    orch_axons: list[Axon] | None = None,
    bus_kw: dict[str, Any] | None = None,
    before_start: Callable[[Synapse], Awaitable[object]] | None = None,
) -> AsyncIterator[tuple[Dendrite, Dendrite, Synapse, Synapse]]:
    """A worker Dendrite ("worker") hosting *worker_axons* and an orchestrator ("orch"), each on
    its own connection to one bus of *kind*; yields ``(worker, orch, worker_bus, orch_bus)``
    once both are live.  *before_start* gets the orchestrator's connection first (to
    subscribe a recorder that sees everything from the start)."""
    async with open_bus(kind, nats_url, **(bus_kw or {})) as make, AsyncExitStack() as stack:
        worker_bus, orch_bus = make(), make()
        for syn in (worker_bus, orch_bus):
            await syn.connect()
            stack.push_async_callback(syn.close)
        if before_start is not None:
            await before_start(orch_bus)
        worker = Dendrite(
            synapse=worker_bus, namespace=namespace, role="worker", dendrite_id="worker", heartbeat_s=0,
            **(worker_kw or {}),
        )  # fmt: skip
        for axon in worker_axons:
            worker.attach_axon(axon)
        orch = Dendrite(
            synapse=orch_bus, namespace=namespace, dendrite_id="orch", heartbeat_s=0, **(orch_kw or {})
        )
        for axon in orch_axons or ():
            orch.attach_axon(axon)
        await stack.enter_async_context(worker)
        await stack.enter_async_context(orch)
        await settle(worker_bus)
        await settle(orch_bus)
        yield worker, orch, worker_bus, orch_bus


@asynccontextmanager
async def worker_and_orchestrator(
    kind: str, nats_url: str | None, namespace: str, worker_axons: list[Axon], **worker_kw: Any
) -> AsyncIterator[Dendrite]:
    """``two_dendrites``, yielding the orchestrator only."""
    async with two_dendrites(kind, nats_url, namespace, worker_axons, worker_kw=worker_kw) as (_, orch, _, _):
        yield orch
