"""The ``Engram`` ABC: shared memory a Dendrite hosts and serves over RECALL / IMPRINT (§14).

A backend implements ``recall`` and ``imprint``.  Backends that can undo their
writes also keep a *saga journal* per trace: ``imprint(..., trace_id=T)``
records the entry's prior state and the revision the write produced,
``compensate(T)`` undoes the trace's writes newest first — exactly once, and
only those nobody wrote over since (the others are conflicts, reported and left
alone; see ``saga``) — and ``commit(T)`` forgets them.  The journal lives in the
backend itself, so a durable backend keeps it across restarts.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any, Self

from ..signal import Directed, Signal, SignalType
from .model import ImprintReceipt
from .saga import CompensationReport

__all__ = ["Engram"]


class Engram(abc.ABC):
    """A memory that answers RECALL and applies IMPRINT; addressed by id or kind."""

    #: Default kind, used when the constructor is not given one.
    default_kind = "context"

    def __init__(
        self,
        *,
        engram_id: str,
        engram_kind: str | None = None,
        capabilities: tuple[str, ...] | list[str] = (),
        version: str | None = None,
    ) -> None:
        if not engram_id:
            raise ValueError("an Engram needs a non-empty engram_id")
        self.engram_id = engram_id
        self.engram_kind: str = engram_kind or self.default_kind
        self.capabilities: tuple[str, ...] = tuple(sorted(set(capabilities)))
        self.version = version

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.engram_id!r} kind={self.engram_kind!r}>"

    # -- life cycle (the owner calls these; a Dendrite never closes an engram) --
    async def connect(self) -> None:
        """Open storage; backends also connect lazily on first use."""

    async def close(self) -> None:
        """Release storage."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- serving --------------------------------------------------------------
    def can_serve(self, query: dict[str, Any]) -> bool:
        """False makes this engram stay silent for *query* (another may answer)."""
        return True

    @abc.abstractmethod
    async def recall(
        self,
        query: dict[str, Any],
        *,
        filters: dict[str, Any] | None = None,
        context_ref: str | None = None,
        deadline_ms: int | None = None,
        min_confidence: float | None = None,
    ) -> list[Any]:
        """The matching entries as ``Hit``s, best first (a ``Hits`` list may flag ``truncated``)."""

    @abc.abstractmethod
    async def imprint(
        self,
        op: str,
        entry: dict[str, Any],
        *,
        merge_key: str | None = None,
        imprint_id: str | None = None,
        trace_id: str | None = None,
    ) -> ImprintReceipt:
        """Apply one write; *imprint_id* makes a replay a no-op, *trace_id* journals it."""

    # -- saga -----------------------------------------------------------------
    async def compensate(self, trace_id: str) -> CompensationReport:
        """Undo *trace_id*'s journaled writes newest first, skipping entries written since.

        Returns what was restored and which entries conflicted; a backend that
        journals nothing restores nothing.
        """
        return CompensationReport(self.engram_id, trace_id)

    async def commit(self, trace_id: str) -> None:
        """Forget *trace_id*'s journal: its writes stay."""

    # -- presence ---------------------------------------------------------------
    def register_signal(self) -> Signal:
        """The REGISTER announcing this engram (§7.2); engrams never heartbeat."""
        payload: dict[str, Any] = {"role": "engram", "capabilities": list(self.capabilities)}
        if self.version:
            payload["version"] = self.version
        payload["engram"] = True
        return Signal(
            type=SignalType.REGISTER,
            directed=Directed(self.engram_id, self.engram_kind, self.capabilities),
            payload=payload,
        )
