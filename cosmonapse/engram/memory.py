"""``InMemoryEngram``: a process-local engram with a saga journal (§14.2, §14.3).

Every operation is synchronous inside the event loop (no ``await`` between
reading and writing), so each write, its journal record and its idempotency
record happen atomically.  The journal keeps, per trace, the prior state of
every entry the trace touched; compensation restores those states newest first.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from ..ids import new_engram_id
from .base import Engram
from .model import (
    IMPRINT_OPS,
    Hit,
    Hits,
    ImprintReceipt,
    clean_entry,
    deep_merge,
    score_entry,
    stored_form,
    top_k_of,
    union_tags,
)

__all__ = ["InMemoryEngram", "now_iso"]

#: Journals older than this are dropped (a trace that never ended must not pin memory forever).
DEFAULT_JOURNAL_TTL_S = 24 * 3600.0
#: Imprint ids remembered for idempotency.
DEFAULT_MAX_SEEN = 65_536


def now_iso() -> str:
    """UTC now with a fixed microsecond width, so timestamps sort as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# One journal record: (entry id, the entry before the write or None if it did not exist, its recency).
_Undo = tuple[str, dict[str, Any] | None, int | None]


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
        self.journal_ttl_s = journal_ttl_s
        self.max_seen = max_seen
        self._entries: dict[str, dict[str, Any]] = {}
        self._recency: dict[str, int] = {}
        self._clock = 0
        self._seen: OrderedDict[str, ImprintReceipt] = OrderedDict()
        self._journal: dict[str, list[_Undo]] = {}
        self._journal_born: dict[str, float] = {}

    async def close(self) -> None:
        self._entries.clear()
        self._recency.clear()
        self._seen.clear()
        self._journal.clear()
        self._journal_born.clear()

    # -- introspection (tests, debugging) ------------------------------------------
    async def entries(self) -> list[dict[str, Any]]:
        """Every stored entry, oldest first (copies)."""
        ids = sorted(self._entries, key=lambda i: self._recency[i])
        return [copy.deepcopy(self._entries[i]) for i in ids]

    async def journaled_traces(self) -> list[str]:
        """Traces with journaled writes (tests, debugging)."""
        return sorted(self._journal)

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
        scored: list[tuple[float, int, str]] = []
        for entry_id, stored in self._entries.items():
            score = score_entry(stored, query, filters)
            if score is None or (min_confidence is not None and score < min_confidence):
                continue
            scored.append((score, self._recency[entry_id], entry_id))
        scored.sort(reverse=True)
        k = top_k_of(query)
        hits = Hits(Hit(i, copy.deepcopy(self._entries[i]), s) for s, _, i in scored[:k])
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
        if imprint_id is not None and imprint_id in self._seen:
            return self._seen[imprint_id]  # a replay: the original receipt, nothing written
        receipt = self._apply(op, clean_entry(entry), merge_key, trace_id)
        receipt = ImprintReceipt(
            self.engram_id, op, receipt.id, receipt.version, round((time.perf_counter() - started) * 1000, 3),
            receipt.error,
        )  # fmt: skip
        if imprint_id is not None and receipt.error is None:
            self._seen[imprint_id] = receipt
            while len(self._seen) > self.max_seen:
                self._seen.popitem(last=False)
        return receipt

    def _latest(self, merge_key: str) -> str | None:
        best: str | None = None
        for entry_id, stored in self._entries.items():
            if stored.get("merge_key") == merge_key and (
                best is None or self._recency[entry_id] > self._recency[best]
            ):
                best = entry_id
        return best

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _journal_write(self, trace_id: str | None, entry_id: str) -> None:
        if trace_id is None:
            return
        prior = self._entries.get(entry_id)
        record: _Undo = (
            entry_id,
            copy.deepcopy(prior) if prior is not None else None,
            self._recency.get(entry_id),
        )
        if trace_id not in self._journal:
            self._prune_journal()
            self._journal_born[trace_id] = time.monotonic()
        self._journal.setdefault(trace_id, []).append(record)

    def _prune_journal(self) -> None:
        cutoff = time.monotonic() - self.journal_ttl_s
        for trace_id, born in list(self._journal_born.items()):
            if born < cutoff:
                self._journal_born.pop(trace_id, None)
                self._journal.pop(trace_id, None)

    def _insert(
        self, entry: dict[str, Any], entry_id: str, merge_key: str | None, trace_id: str | None
    ) -> ImprintReceipt:
        now = now_iso()
        self._journal_write(trace_id, entry_id)
        self._entries[entry_id] = stored_form(
            entry_id, copy.deepcopy(entry["content"]), entry["tags"], entry["meta"], 1, now, now, merge_key
        )
        self._recency[entry_id] = self._tick()
        return ImprintReceipt(self.engram_id, "", entry_id, 1)

    def _update(
        self, entry_id: str, trace_id: str | None, content: Any, tags: list[str], meta: dict[str, Any]
    ) -> ImprintReceipt:
        self._journal_write(trace_id, entry_id)
        old = self._entries[entry_id]
        version = int(old.get("version") or 1) + 1
        self._entries[entry_id] = stored_form(
            entry_id, content, tags, meta, version, old["created_at"], now_iso(), old.get("merge_key")
        )
        self._recency[entry_id] = self._tick()
        return ImprintReceipt(self.engram_id, "", entry_id, version)

    def _apply(
        self, op: str, entry: dict[str, Any], merge_key: str | None, trace_id: str | None
    ) -> ImprintReceipt:
        if op not in IMPRINT_OPS:
            return ImprintReceipt(self.engram_id, op, error=f"unknown op {op!r}")
        if op in ("merge", "upsert") and not merge_key:
            return ImprintReceipt(self.engram_id, op, error=f"{op} needs a merge_key")
        given = entry.get("id")
        if op == "add":
            if given and given in self._entries:
                return ImprintReceipt(self.engram_id, op, error=f"entry {given} already exists")
            return self._insert(entry, given or new_engram_id(), merge_key, trace_id)
        if op == "append":
            entry_id = given if given and given not in self._entries else new_engram_id()
            return self._insert(entry, entry_id, merge_key, trace_id)
        target = self._latest(merge_key) if merge_key else None
        if op == "upsert":
            if target is None:
                entry_id = given if given and given not in self._entries else new_engram_id()
                return self._insert(entry, entry_id, merge_key, trace_id)
            return self._update(
                target, trace_id, copy.deepcopy(entry["content"]), entry["tags"], entry["meta"]
            )
        if op == "merge":
            if target is None:
                return ImprintReceipt(self.engram_id, op, error=f"no entry with merge_key {merge_key!r}")
            old = self._entries[target]
            return self._update(
                target,
                trace_id,
                deep_merge(copy.deepcopy(old["content"]), copy.deepcopy(entry["content"])),
                union_tags(old.get("tags") or [], entry["tags"]),
                {**(old.get("meta") or {}), **entry["meta"]},
            )
        # delete: by id, else the latest entry with the merge_key; never an error
        victim = given if given in self._entries else (None if given else target)
        if victim is None:
            return ImprintReceipt(self.engram_id, op)
        self._journal_write(trace_id, victim)
        del self._entries[victim]
        del self._recency[victim]
        return ImprintReceipt(self.engram_id, op, victim)

    # -- saga --------------------------------------------------------------------
    async def compensate(self, trace_id: str) -> int:
        records = self._journal.pop(trace_id, None) or []
        self._journal_born.pop(trace_id, None)
        for entry_id, prior, recency in reversed(records):
            if prior is None:
                self._entries.pop(entry_id, None)
                self._recency.pop(entry_id, None)
            else:
                self._entries[entry_id] = prior
                self._recency[entry_id] = recency if recency is not None else self._tick()
        return len(records)

    async def commit(self, trace_id: str) -> None:
        self._journal.pop(trace_id, None)
        self._journal_born.pop(trace_id, None)
