"""The ``RegistryStore`` protocol (§21) and the pieces every store shares.

One store per namespace.  Semantics that differ from the reference on
purpose: a heartbeat only refreshes ``last_heartbeat`` — it never overwrites
``status`` (the reference writes ``"ok"`` there) and never revives a
deregistered record (only a REGISTER does).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from .record import NeuronRecord

__all__ = ["RegistryStore", "filter_records"]


@runtime_checkable
class RegistryStore(Protocol):
    """Where a Dendrite mirrors REGISTER / DEREGISTER / HEARTBEAT."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def upsert(self, record: NeuronRecord) -> None:
        """Insert or replace; an existing record keeps its ``registered_at``."""
        ...

    async def mark_deregistered(self, neuron_id: str) -> None:
        """Status ``deregistered``; unknown ids are ignored."""
        ...

    async def touch_heartbeat(self, neuron_id: str, ts: datetime, status: str | None = None) -> None:
        """Refresh ``last_heartbeat`` (a thin record for an unknown id; deregistered ones stay so)."""
        ...

    async def get(self, neuron_id: str) -> NeuronRecord | None: ...

    async def records(
        self, capability: str | None = None, include_deregistered: bool = False
    ) -> list[NeuronRecord]:
        """Records sorted by id, optionally only those with *capability*; deregistered ones only if asked.

        (Named ``records``, not ``list``: a method named ``list`` shadows the builtin in the class.)
        """
        ...

    async def mark_stale(self, cutoff: datetime, keep: frozenset[str] = frozenset()) -> list[str]:
        """Deregister live records last seen before *cutoff* (except *keep*); returns their ids."""
        ...


def filter_records(
    records: list[NeuronRecord], capability: str | None, include_deregistered: bool
) -> list[NeuronRecord]:
    return sorted(
        (
            r
            for r in records
            if (include_deregistered or r.alive) and (capability is None or capability in r.capabilities)
        ),
        key=lambda r: r.neuron_id,
    )
