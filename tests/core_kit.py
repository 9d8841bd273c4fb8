"""A worker and an orchestrator on one bus of any kind, with a recorder of everything on it.

``pair(kind, nats_url, ns, axons)`` yields a ``Pair``: the two Dendrites, their
synapses and a ``SignalRecorder`` of every Signal published in the namespace
(subscribed on the orchestrator's connection before anything runs).  The tests
of the core's promises (deadlines, STOP priority, silence after STOP,
redelivery, bounded state) use it on memory, cosmo:// and NATS alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
from bus_kit import open_bus, settle

from cosmonapse import Axon, Dendrite, Synapse
from cosmonapse.testing.harness import SignalRecorder


@attrs.define
class Pair:
    worker: Dendrite
    orch: Dendrite
    worker_bus: Synapse
    orch_bus: Synapse
    seen: SignalRecorder

    async def subscribed(self) -> None:
        """Handlers registered since start are subscribed, and the bus knows (NATS: a flush)."""
        for dendrite in (self.worker, self.orch):
            await dendrite._core.settle()
        await settle(self.worker_bus)
        await settle(self.orch_bus)


@asynccontextmanager
async def pair(
    kind: str,
    nats_url: str | None,
    namespace: str,
    axons: list[Axon],
    *,
    worker_kw: dict[str, Any] | None = None,
    orch_kw: dict[str, Any] | None = None,
    orch_axons: list[Axon] | None = None,
    bus_kw: dict[str, Any] | None = None,
) -> AsyncIterator[Pair]:
    async with open_bus(kind, nats_url, **(bus_kw or {})) as make, AsyncExitStack() as stack:
        worker_bus, orch_bus = make(), make()
        for syn in (worker_bus, orch_bus):
            await syn.connect()
            stack.push_async_callback(syn.close)
        seen = SignalRecorder()
        await orch_bus.subscribe(f"cosmonapse.{namespace}.>", seen)
        worker = Dendrite(
            synapse=worker_bus,
            namespace=namespace,
            role="worker",
            dendrite_id="worker",
            heartbeat_s=0,
            **(worker_kw or {}),
        )
        for axon in axons:
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
        yield Pair(worker, orch, worker_bus, orch_bus, seen)
