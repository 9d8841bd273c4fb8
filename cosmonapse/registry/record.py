"""``NeuronRecord``: one row of the registry (§21)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = ["STATUSES", "NeuronRecord", "utc_now"]

#: The statuses a record can have; heartbeats never change it.
STATUSES = ("registered", "draining", "deregistered")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _caps(value: Any) -> list[str]:
    return sorted({str(c) for c in value or ()})


@attrs.frozen
class NeuronRecord:
    """What the registry knows about one neuron."""

    neuron_id: str
    capabilities: list[str] = attrs.field(factory=list, converter=_caps)
    version: str | None = None
    status: str = "registered"
    last_heartbeat: datetime | None = attrs.field(default=None, converter=_utc)
    registered_at: datetime = attrs.field(factory=utc_now, converter=_utc)  # type: ignore[misc]

    @property
    def alive(self) -> bool:
        return self.status != "deregistered"

    @property
    def last_seen(self) -> datetime:
        """The last heartbeat, else the registration time."""
        return self.last_heartbeat or self.registered_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "neuron_id": self.neuron_id,
            "capabilities": list(self.capabilities),
            "version": self.version,
            "status": self.status,
            "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None,
            "registered_at": self.registered_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuronRecord:
        return cls(
            neuron_id=data["neuron_id"],
            capabilities=data.get("capabilities") or [],
            version=data.get("version"),
            status=data.get("status") or "registered",
            last_heartbeat=data.get("last_heartbeat"),
            registered_at=data.get("registered_at") or utc_now(),
        )
