"""``MemoryRegistryStore``: the registry in a dict (one process, one namespace)."""

from __future__ import annotations

from datetime import datetime

import attrs

from .record import NeuronRecord
from .store import filter_records

__all__ = ["MemoryRegistryStore"]

#: Statuses a heartbeat may set explicitly (anything else, like the reference's "ok", is ignored).
_HEARTBEAT_STATUSES = ("registered", "draining")


class MemoryRegistryStore:
    """Every operation is synchronous inside the event loop, hence atomic."""

    def __init__(self) -> None:
        self._records: dict[str, NeuronRecord] = {}

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def upsert(self, record: NeuronRecord) -> None:
        old = self._records.get(record.neuron_id)
        if old is not None:
            record = attrs.evolve(record, registered_at=old.registered_at)
        self._records[record.neuron_id] = record

    async def mark_deregistered(self, neuron_id: str) -> None:
        self._deregister(neuron_id)

    def _deregister(self, neuron_id: str) -> None:
        old = self._records.get(neuron_id)
        if old is not None:
            self._records[neuron_id] = attrs.evolve(old, status="deregistered")

    async def touch_heartbeat(self, neuron_id: str, ts: datetime, status: str | None = None) -> None:
        old = self._records.get(neuron_id)
        if old is None:
            self._records[neuron_id] = NeuronRecord(neuron_id, last_heartbeat=ts, registered_at=ts)
        elif old.alive:
            new_status = status if status in _HEARTBEAT_STATUSES else old.status
            self._records[neuron_id] = attrs.evolve(old, last_heartbeat=ts, status=new_status)

    async def get(self, neuron_id: str) -> NeuronRecord | None:
        return self._records.get(neuron_id)

    async def records(
        self, capability: str | None = None, include_deregistered: bool = False
    ) -> list[NeuronRecord]:
        return filter_records(list(self._records.values()), capability, include_deregistered)

    async def mark_stale(self, cutoff: datetime, keep: frozenset[str] = frozenset()) -> list[str]:
        stale = [
            r.neuron_id
            for r in self._records.values()
            if r.alive and r.last_seen < cutoff and r.neuron_id not in keep
        ]
        for neuron_id in stale:
            self._deregister(neuron_id)
        return stale
