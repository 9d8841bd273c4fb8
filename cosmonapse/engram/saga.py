"""Conflict-aware compensation: the saga journal's rules, shared by every backend (§12).

Every write an engram applies stamps the entry with a fresh *revision* (a
counter per engram store that never goes back: SQLite keeps it in a table,
Postgres in a sequence, memory in a tick).  A journaled write records the
revision the entry had before it (and that prior state) and the revision it
produced.  Compensating a trace walks its records newest first:

* the entry is still at the revision this record produced → nothing wrote it
  since: restore the prior state (its revision included);
* otherwise someone else wrote it since → a **conflict**: leave the entry as it
  is, report and log it, and *splice* the record out of the entry's history —
  the journaled write that replaced ours inherits our prior state, so if that
  trace is rolled back too it restores what was there before us, never our
  rolled-back write.

Why not the entry's ``version``: it repeats (an entry deleted and added again
starts at 1), so it cannot tell two states apart; a revision can.

The result: committed (or simply unsettled) writes of other traces are never
touched, a rolled-back write never comes back, and the end state does not
depend on the order in which traces are rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from ..telemetry import log_extra

__all__ = [
    "CompensationConflict",
    "CompensationReport",
    "JournalRecord",
    "SagaTable",
    "compensate_trace",
]

log: logging.Logger = logging.getLogger("cosmonapse.engram")
#: Conflicting entry ids named in one log line (the report has them all).
_LOGGED_IDS = 20


@attrs.frozen
class JournalRecord:
    """One journaled write: the entry, its state and revision before, the revision it produced.

    ``prior`` is the backend's own form of the prior state (None: the entry did
    not exist); ``produced`` is None only for records written before revisions
    existed, which are never restored.
    """

    key: Any
    entry_id: str
    prior: Any
    prior_revision: int | None
    produced: int | None


@attrs.frozen
class CompensationConflict:
    """An entry a rollback left alone: it was written again after this trace wrote it."""

    entry_id: str
    #: The revision this trace's write produced.
    wrote: int | None
    #: The revision the entry is at now (None: it is gone, or its revision is unknown).
    found: int | None

    def to_payload(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "wrote": self.wrote, "found": self.found}


@attrs.frozen
class CompensationReport:
    """What ``Engram.compensate(trace)`` did: writes undone, and writes it had to leave."""

    engram_id: str
    trace_id: str
    restored: int = 0
    conflicts: tuple[CompensationConflict, ...] = ()

    @property
    def conflicted(self) -> list[str]:
        """The ids of the entries left alone, oldest write last (the order they were met)."""
        return [c.entry_id for c in self.conflicts]

    def to_payload(self) -> dict[str, Any]:
        """A JSON form, e.g. for a STOPPED payload: ``{engram_id, restored, conflicts: [ids]}``."""
        return {"engram_id": self.engram_id, "restored": self.restored, "conflicts": self.conflicted}

    @classmethod
    def coerce(cls, value: object, engram_id: str, trace_id: str) -> CompensationReport:
        """A report from whatever a backend's ``compensate`` returned (older backends return an int)."""
        if isinstance(value, CompensationReport):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(engram_id, trace_id, restored=value)
        return cls(engram_id, trace_id)


class SagaTable(Protocol):
    """One engram's journal and entries inside one transaction (or one synchronous step)."""

    def journal_records(self, trace_id: str) -> Sequence[JournalRecord]:
        """The trace's records, newest first."""
        ...

    def revision_of(self, entry_id: str) -> int | None:
        """The entry's current revision (a deleted entry keeps the revision of its delete)."""
        ...

    def restore(self, record: JournalRecord) -> None:
        """Put the record's prior state back (remove the entry when there was none)."""
        ...

    def splice(self, record: JournalRecord, trace_id: str) -> None:
        """Give the record's prior to the other trace's record whose prior is the state it produced."""
        ...

    def forget(self, trace_id: str) -> None:
        """Drop the trace's journal."""
        ...


def compensate_trace(table: SagaTable, engram_id: str, trace_id: str) -> CompensationReport:
    """Undo *trace_id*'s writes newest first, skipping conflicts; drops its journal.

    Run it inside the same transaction (or synchronous step) as everything it
    reads and writes: then it happens exactly once.
    """
    restored = 0
    conflicts: list[CompensationConflict] = []
    for record in table.journal_records(trace_id):
        found = table.revision_of(record.entry_id)
        if record.produced is not None and found == record.produced:
            table.restore(record)
            restored += 1
        else:
            conflicts.append(CompensationConflict(record.entry_id, record.produced, found))
            if record.produced is not None:
                table.splice(record, trace_id)
    table.forget(trace_id)
    report = CompensationReport(engram_id, trace_id, restored, tuple(conflicts))
    if conflicts:
        ids = report.conflicted
        shown = ", ".join(ids[:_LOGGED_IDS]) + (
            f" and {len(ids) - _LOGGED_IDS} more" if len(ids) > _LOGGED_IDS else ""
        )
        log.warning(
            "engram %s: rollback of trace %s left %d entr%s alone, written again by another trace "
            "or an untraced write since: %s (restored %d)",
            engram_id, trace_id, len(ids), "y" if len(ids) == 1 else "ies", shown, restored,
            extra=log_extra(trace_id=trace_id),
        )  # fmt: skip
    return report
