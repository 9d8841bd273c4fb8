"""``InMemoryEngram``: a process-local engram with a saga journal (§14.2, §14.3).

Every operation is synchronous inside the event loop (no ``await`` between
reading and writing), so each write, its journal record and its idempotency
record happen atomically, and so does a compensation.  The write rules are
``writes.imprint_once`` and the compensation rules ``saga.compensate_trace``,
shared with the SQL backends; this module only stores things in dicts.

A write's revision is a tick of the engram's clock, which is also its recency
(the order recall breaks ties in).  A journaled delete leaves a *tombstone*
(entry id → the delete's revision) while its trace is unsettled, so a rollback
can tell "still deleted by us" from "deleted again by someone else".
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Any

import attrs

from .base import Engram
from .model import Hit, Hits, ImprintReceipt, clean_entry, now_iso, score_entry, top_k_of
from .saga import CompensationReport, JournalRecord, compensate_trace
from .writes import imprint_once

__all__ = ["InMemoryEngram", "now_iso"]

#: Journals older than this are dropped (a trace that never ended must not pin memory forever).
DEFAULT_JOURNAL_TTL_S = 24 * 3600.0
#: Imprint ids remembered for idempotency.
DEFAULT_MAX_SEEN = 65_536


@attrs.define
class _Undo:
    """One journaled write (mutable: a conflicting rollback may hand it an older prior)."""

    entry_id: str
    prior: dict[str, Any] | None
    prior_revision: int | None
    produced: int


class _Store:
    """The dicts behind an ``InMemoryEngram``, as the shared write and saga rules see them."""

    def __init__(self, max_seen: int, journal_ttl_s: float) -> None:
        self.max_seen = max_seen
        self.journal_ttl_s = journal_ttl_s
        self.entries: dict[str, dict[str, Any]] = {}
        self.recency: dict[str, int] = {}  # entry id -> revision of its last write
        self.gone: dict[str, int] = {}  # entry id -> revision of a journaled delete (tombstone)
        self.clock = 0
        self.seen: OrderedDict[str, ImprintReceipt] = OrderedDict()
        self.journals: dict[str, list[_Undo]] = {}
        self.born: dict[str, float] = {}

    def clear(self) -> None:
        for table in (self.entries, self.recency, self.gone, self.seen, self.journals, self.born):
            table.clear()

    # -- EntryTable ------------------------------------------------------------------
    def live(self, entry_id: str) -> dict[str, Any] | None:
        return self.entries.get(entry_id)

    def latest(self, merge_key: str) -> dict[str, Any] | None:
        best: str | None = None
        for entry_id, stored in self.entries.items():
            if stored.get("merge_key") == merge_key and (
                best is None or self.recency[entry_id] > self.recency[best]
            ):
                best = entry_id
        return self.entries[best] if best is not None else None

    def next_revision(self) -> int:
        self.clock += 1
        return self.clock

    def journal(self, trace_id: str, entry_id: str, produced: int) -> None:
        if trace_id not in self.journals:
            self._prune()
            self.born[trace_id] = time.monotonic()
        prior = self.entries.get(entry_id)
        undo = _Undo(entry_id, copy.deepcopy(prior), self.revision_of(entry_id), produced)
        self.journals.setdefault(trace_id, []).append(undo)

    def put(self, stored: dict[str, Any], revision: int) -> None:
        entry_id = stored["id"]
        self.entries[entry_id] = copy.deepcopy(stored)
        self.recency[entry_id] = revision
        self.gone.pop(entry_id, None)

    def remove(self, entry_id: str, revision: int, journaled: bool) -> None:
        del self.entries[entry_id]
        del self.recency[entry_id]
        if journaled:
            self.gone[entry_id] = revision
        else:
            self.gone.pop(entry_id, None)

    def replayed(self, imprint_id: str, op: str) -> ImprintReceipt | None:
        return self.seen.get(imprint_id)

    def remember(self, imprint_id: str, receipt: ImprintReceipt) -> None:
        self.seen[imprint_id] = receipt
        while len(self.seen) > self.max_seen:
            self.seen.popitem(last=False)

    # -- SagaTable -------------------------------------------------------------------
    def journal_records(self, trace_id: str) -> list[JournalRecord]:
        undos = self.journals.get(trace_id) or []
        return [JournalRecord(u, u.entry_id, u.prior, u.prior_revision, u.produced) for u in reversed(undos)]

    def revision_of(self, entry_id: str) -> int | None:
        if entry_id in self.entries:
            return self.recency[entry_id]
        return self.gone.get(entry_id)

    def restore(self, record: JournalRecord) -> None:
        entry_id = record.entry_id
        if record.prior is None:
            self.entries.pop(entry_id, None)
            self.recency.pop(entry_id, None)
            if record.prior_revision is not None:
                self.gone[entry_id] = record.prior_revision  # deleted before us: deleted again
            else:
                self.gone.pop(entry_id, None)
        else:
            self.entries[entry_id] = copy.deepcopy(record.prior)
            self.recency[entry_id] = record.prior_revision if record.prior_revision is not None else 0
            self.gone.pop(entry_id, None)

    def splice(self, record: JournalRecord, trace_id: str) -> None:
        for other, undos in self.journals.items():
            if other == trace_id:
                continue
            for undo in undos:
                if undo.entry_id == record.entry_id and undo.prior_revision == record.produced:
                    undo.prior, undo.prior_revision = record.prior, record.prior_revision

    def forget(self, trace_id: str) -> None:
        self.born.pop(trace_id, None)
        for undo in self.journals.pop(trace_id, None) or ():
            if self.gone.get(undo.entry_id) == undo.produced:
                del self.gone[undo.entry_id]  # our delete is settled: nobody needs its tombstone

    def _prune(self) -> None:
        """Drop journals older than the TTL, and tombstones no unsettled write refers to."""
        cutoff = time.monotonic() - self.journal_ttl_s
        for trace_id, born in list(self.born.items()):
            if born < cutoff:
                self.forget(trace_id)
        if self.gone:
            wanted = {(u.entry_id, u.produced) for undos in self.journals.values() for u in undos}
            self.gone = {i: r for i, r in self.gone.items() if (i, r) in wanted}


class InMemoryEngram(Engram):
    """Entries in a dict; ``close()`` clears them."""

    default_kind = "keyvalue"

    def __init__(
        self,
        engram_id: str = "engram-memory",
        engram_kind: str | None = None,
        *,
        capabilities: tuple[str, ...] | list[str] = (),
        version: str | None = None,
        journal_ttl_s: float = DEFAULT_JOURNAL_TTL_S,
        max_seen: int = DEFAULT_MAX_SEEN,
    ) -> None:
        super().__init__(
            engram_id=engram_id, engram_kind=engram_kind, capabilities=capabilities, version=version
        )
        self._store = _Store(max_seen, journal_ttl_s)

    @property
    def journal_ttl_s(self) -> float:
        return self._store.journal_ttl_s

    async def close(self) -> None:
        self._store.clear()

    # -- introspection (tests, debugging) ------------------------------------------
    async def entries(self) -> list[dict[str, Any]]:
        """Every stored entry, oldest first (copies)."""
        store = self._store
        ids = sorted(store.entries, key=lambda i: store.recency[i])
        return [copy.deepcopy(store.entries[i]) for i in ids]

    async def journaled_traces(self) -> list[str]:
        """Traces with journaled writes (tests, debugging)."""
        return sorted(self._store.journals)

    # -- recall ------------------------------------------------------------------
    async def recall(
        self,
        query: dict[str, Any],
        *,
        filters: dict[str, Any] | None = None,
        context_ref: str | None = None,
        deadline_ms: int | None = None,
        min_confidence: float | None = None,
    ) -> list[Any]:
        store = self._store
        scored: list[tuple[float, int, str]] = []
        for entry_id, stored in store.entries.items():
            score = score_entry(stored, query, filters)
            if score is None or (min_confidence is not None and score < min_confidence):
                continue
            scored.append((score, store.recency[entry_id], entry_id))
        scored.sort(reverse=True)
        k = top_k_of(query)
        hits = Hits(Hit(i, copy.deepcopy(store.entries[i]), s) for s, _, i in scored[:k])
        hits.truncated = len(scored) > k
        return hits

    # -- imprint -----------------------------------------------------------------
    async def imprint(
        self,
        op: str,
        entry: dict[str, Any],
        *,
        merge_key: str | None = None,
        imprint_id: str | None = None,
        trace_id: str | None = None,
    ) -> ImprintReceipt:
        started = time.perf_counter()
        r = imprint_once(self._store, self.engram_id, op, clean_entry(entry), merge_key, imprint_id, trace_id)
        took = round((time.perf_counter() - started) * 1000, 3)
        return ImprintReceipt(self.engram_id, op, r.id, r.version, took, r.error)

    # -- saga --------------------------------------------------------------------
    async def compensate(self, trace_id: str) -> CompensationReport:
        return compensate_trace(self._store, self.engram_id, trace_id)

    async def commit(self, trace_id: str) -> None:
        self._store.forget(trace_id)
