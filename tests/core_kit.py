"""A worker and an orchestrator on one bus of any kind, with a recorder of everything on it.

``pair(kind, nats_url, ns, axons)`` yields a ``Pair``: the two Dendrites, their
synapses and a ``SignalRecorder`` of every Signal published in the namespace
(subscribed on the orchestrator's connection before anything runs).  The tests
of the core's promises (deadlines, STOP priority, silence after STOP,
redelivery, bounded state) use it on memory, cosmo:// and NATS alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
from bus_kit import settle, two_dendrites

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
    seen = SignalRecorder()

    async def record(orch_bus: Synapse) -> None:
        await orch_bus.subscribe(f"cosmonapse.{namespace}.>", seen)

    async with two_dendrites(
        kind, nats_url, namespace, axons, worker_kw=worker_kw, orch_kw=orch_kw, orch_axons=orch_axons,
        bus_kw=bus_kw, before_start=record,
    ) as (worker, orch, worker_bus, orch_bus):  # fmt: skip
        yield Pair(worker, orch, worker_bus, orch_bus, seen)
