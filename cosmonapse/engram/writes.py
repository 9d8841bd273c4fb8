"""What an IMPRINT does (§14.2), once, for every backend: ops, idempotency, journaling, revisions.

A backend supplies an ``EntryTable``: a handful of primitives over its storage
inside one transaction (SQLite, Postgres) or one synchronous step (memory).
``imprint_once`` applies the op with them, so the three backends cannot
drift apart on what ``add``, ``append``, ``upsert``, ``merge`` and ``delete``
mean, and every write is stamped with a fresh revision and, under a trace,
journaled with the revision it produced (see ``saga``).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..ids import new_engram_id
from .model import IMPRINT_OPS, ImprintReceipt, deep_merge, now_iso, stored_form, union_tags
from .saga import SagaTable

__all__ = ["EntryTable", "imprint_once"]


class EntryTable(SagaTable, Protocol):
    """One engram's entries, journal and idempotency records, as the write rules need them."""

    def live(self, entry_id: str) -> dict[str, Any] | None:
        """The entry in stored form, or None if there is none or it was deleted."""
        ...

    def latest(self, merge_key: str) -> dict[str, Any] | None:
        """The most recently written live entry with *merge_key*."""
        ...

    def next_revision(self) -> int:
        """A revision no write of this store has had."""
        ...

    def journal(self, trace_id: str, entry_id: str, produced: int) -> None:
        """Record the entry's state now (before the write) under *trace_id*, and what the write produces."""
        ...

    def put(self, stored: dict[str, Any], revision: int) -> None:
        """Insert or replace the entry (stored form); it is live afterwards."""
        ...

    def remove(self, entry_id: str, revision: int, journaled: bool) -> None:
        """Delete the entry; its deletion has *revision*."""
        ...

    def replayed(self, imprint_id: str, op: str) -> ImprintReceipt | None:
        """The receipt to return when *imprint_id* was applied before, else None."""
        ...

    def remember(self, imprint_id: str, receipt: ImprintReceipt) -> None:
        """Note that *imprint_id* was applied (a successful write)."""
        ...


def imprint_once(
    table: EntryTable,
    engram_id: str,
    op: str,
    entry: dict[str, Any],
    merge_key: str | None,
    imprint_id: str | None,
    trace_id: str | None,
    *,
    echo_missing_delete: bool = False,
) -> ImprintReceipt:
    """Apply one cleaned entry (``clean_entry``); a known *imprint_id* writes nothing.

    *echo_missing_delete*: a delete that matches nothing returns the given id
    (the SQL backends, as the reference does) instead of no id (memory).
    """
    if imprint_id is not None:
        replay = table.replayed(imprint_id, op)
        if replay is not None:
            return replay
    receipt = _apply(table, engram_id, op, entry, merge_key, trace_id, echo_missing_delete)
    if imprint_id is not None and receipt.error is None:
        table.remember(imprint_id, receipt)
    return receipt


def _write(table: EntryTable, trace_id: str | None, stored: dict[str, Any]) -> None:
    revision = table.next_revision()
    if trace_id is not None:
        table.journal(trace_id, stored["id"], revision)
    table.put(stored, revision)


def _apply(
    table: EntryTable,
    eid: str,
    op: str,
    entry: dict[str, Any],
    merge_key: str | None,
    trace_id: str | None,
    echo_missing_delete: bool,
) -> ImprintReceipt:
    if op not in IMPRINT_OPS:
        return ImprintReceipt(eid, op, error=f"unknown op {op!r}")
    if op in ("merge", "upsert") and not merge_key:
        return ImprintReceipt(eid, op, error=f"{op} needs a merge_key")
    given: str | None = entry.get("id")
    if op == "delete":  # by id, else the latest entry with the merge_key; never an error
        victim = table.live(given) if given else (table.latest(merge_key) if merge_key else None)
        if victim is None:
            return ImprintReceipt(eid, op, given if echo_missing_delete else None)
        revision = table.next_revision()
        if trace_id is not None:
            table.journal(trace_id, victim["id"], revision)
        table.remove(victim["id"], revision, trace_id is not None)
        return ImprintReceipt(eid, op, victim["id"])
    target = table.latest(merge_key) if merge_key and op in ("merge", "upsert") else None
    if op == "merge" and target is None:
        return ImprintReceipt(eid, op, error=f"no entry with merge_key {merge_key!r}")
    if target is not None:  # upsert onto the latest entry with the key, or merge into it
        if op == "upsert":
            content, tags, meta = entry["content"], entry["tags"], entry["meta"]
        else:
            content = deep_merge(target["content"], entry["content"])
            tags = union_tags(target.get("tags") or [], entry["tags"])
            meta = {**(target.get("meta") or {}), **entry["meta"]}
        version = int(target.get("version") or 1) + 1
        stored = stored_form(
            target["id"],
            content,
            tags,
            meta,
            version,
            target["created_at"],
            now_iso(),
            target.get("merge_key"),
        )
        _write(table, trace_id, stored)
        return ImprintReceipt(eid, op, target["id"], version)
    if op == "add":
        if given and table.live(given) is not None:
            return ImprintReceipt(eid, op, error=f"entry {given} already exists")
        entry_id = given or new_engram_id()
    else:  # append, or upsert creating: the given id when it is free
        entry_id = given if given and table.live(given) is None else new_engram_id()
    now = now_iso()
    _write(
        table,
        trace_id,
        stored_form(entry_id, entry["content"], entry["tags"], entry["meta"], 1, now, now, merge_key),
    )
    return ImprintReceipt(eid, op, entry_id, 1)
