"""``SqliteEngram``: an engram in one SQLite file, with a durable saga journal (§14.3).

* SQLite runs off the event loop (``anyio.to_thread.run_sync``) on one
  connection per backend, which an ``anyio.Lock`` (one thread at a time) and a
  ``threading.Lock`` (belt and braces) guard.  WAL mode lets readers of the
  same file proceed while we write.
* Tables ``engram_entries`` and ``engram_imprint_seen`` are the reference's
  (§14.3), so a file written by either can be read by the other.  Deletes are
  soft (``deleted_at``).
* ``engram_saga_journal`` is ours: one row per journaled write holding the
  entry's full prior row (NULL when the write created it).  The write, its
  journal row and its idempotency row commit in one transaction, and
  compensation restores rows newest first and deletes the journal in one
  transaction — exactly once, even after a restart or a duplicate STOP.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ..ids import new_engram_id
from ..sqlite_db import SqliteDatabase
from .base import Engram
from .memory import DEFAULT_JOURNAL_TTL_S, now_iso
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

__all__ = ["SqliteEngram"]

R = TypeVar("R")

_COLUMNS = (
    "id", "engram_kind", "merge_key", "content", "tags", "meta", "version", "created_at", "updated_at",
    "deleted_at",
)  # fmt: skip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS engram_entries (
    id TEXT PRIMARY KEY,
    engram_kind TEXT NOT NULL,
    merge_key TEXT,
    content TEXT,
    tags TEXT DEFAULT '[]',
    meta TEXT DEFAULT '{}',
    version INTEGER DEFAULT 1,
    created_at TEXT,
    updated_at TEXT,
    deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_engram_entries_kind ON engram_entries(engram_kind);
CREATE INDEX IF NOT EXISTS idx_engram_entries_merge_key ON engram_entries(merge_key)
    WHERE merge_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_engram_entries_updated ON engram_entries(updated_at);
CREATE TABLE IF NOT EXISTS engram_imprint_seen (
    imprint_id TEXT PRIMARY KEY,
    entry_id TEXT,
    seen_at TEXT
);
CREATE TABLE IF NOT EXISTS engram_saga_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    prior TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_engram_saga_journal_trace ON engram_saga_journal(trace_id);
"""
#: Prune old journals at most this often (seconds).
_PRUNE_EVERY_S = 60.0


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _stored(row: sqlite3.Row) -> dict[str, Any]:
    tags = json.loads(row["tags"] or "[]")
    meta = json.loads(row["meta"] or "{}")
    content = json.loads(row["content"]) if row["content"] is not None else None
    return stored_form(
        row["id"], content, tags, meta, int(row["version"] or 1), row["created_at"], row["updated_at"],
        row["merge_key"],
    )  # fmt: skip


class SqliteEngram(Engram):
    """An engram in ``path`` (``":memory:"`` for a private in-memory database)."""

    default_kind = "relational"

    def __init__(
        self,
        path: str = ":memory:",
        engram_id: str = "engram-sqlite",
        engram_kind: str | None = None,
        *,
        capabilities: tuple[str, ...] | list[str] = (),
        version: str | None = None,
        journal_ttl_s: float = DEFAULT_JOURNAL_TTL_S,
    ) -> None:
        super().__init__(
            engram_id=engram_id, engram_kind=engram_kind, capabilities=capabilities, version=version
        )
        self.path = str(path)
        self.journal_ttl_s = journal_ttl_s
        self._db = SqliteDatabase(self.path, _SCHEMA)
        self._last_prune = 0.0

    # -- plumbing ------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], R], *, transaction: bool = False) -> R:
        return await self._db.run(fn, transaction=transaction)

    async def connect(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        await self._db.close()

    # -- recall --------------------------------------------------------------------
    async def recall(
        self,
        query: dict[str, Any],
        *,
        filters: dict[str, Any] | None = None,
        context_ref: str | None = None,
        deadline_ms: int | None = None,
        min_confidence: float | None = None,
    ) -> list[Any]:
        def read(conn: sqlite3.Connection) -> Hits:
            sql = "SELECT * FROM engram_entries WHERE deleted_at IS NULL"
            args: list[Any] = []
            if query.get("merge_key") is not None:
                sql += " AND merge_key = ?"
                args.append(query["merge_key"])
            if query.get("id") is not None:
                sql += " AND id = ?"
                args.append(query["id"])
            sql += " ORDER BY updated_at DESC, rowid DESC"
            k = top_k_of(query)
            hits = Hits()
            for row in conn.execute(sql, args):
                stored = _stored(row)
                score = score_entry(stored, query, filters)
                if score is None or (min_confidence is not None and score < min_confidence):
                    continue
                if len(hits) == k:
                    hits.truncated = True
                    break
                hits.append(Hit(stored["id"], stored, score))
            return hits

        return await self._run(read)

    # -- imprint -------------------------------------------------------------------
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
        clean = clean_entry(entry)

        def write(conn: sqlite3.Connection) -> ImprintReceipt:
            return self._write(conn, op, clean, merge_key, imprint_id, trace_id)

        receipt = await self._run(write, transaction=True)
        return ImprintReceipt(
            self.engram_id, op, receipt.id, receipt.version, round((time.perf_counter() - started) * 1000, 3),
            receipt.error,
        )  # fmt: skip

    def _row(self, conn: sqlite3.Connection, entry_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM engram_entries WHERE id = ?", (entry_id,)
        ).fetchone()
        return row

    def _latest(self, conn: sqlite3.Connection, merge_key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM engram_entries WHERE merge_key = ? AND deleted_at IS NULL "
            "ORDER BY updated_at DESC, rowid DESC LIMIT 1",
            (merge_key,),
        ).fetchone()
        return row

    def _journal(self, conn: sqlite3.Connection, trace_id: str | None, entry_id: str) -> None:
        if trace_id is None:
            return
        row = self._row(conn, entry_id)
        prior = _dumps({c: row[c] for c in _COLUMNS}) if row is not None else None
        conn.execute(
            "INSERT INTO engram_saga_journal (trace_id, entry_id, prior, created_at) VALUES (?, ?, ?, ?)",
            (trace_id, entry_id, prior, now_iso()),
        )
        now = time.monotonic()
        if now - self._last_prune > _PRUNE_EVERY_S:
            self._last_prune = now
            cutoff = (datetime.now(UTC) - timedelta(seconds=self.journal_ttl_s)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            conn.execute("DELETE FROM engram_saga_journal WHERE created_at < ?", (cutoff,))

    def _put(
        self,
        conn: sqlite3.Connection,
        entry_id: str,
        content: Any,
        tags: list[str],
        meta: dict[str, Any],
        version: int,
        created_at: str,
        merge_key: str | None,
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO engram_entries (id, engram_kind, merge_key, content, tags, meta, "
            "version, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                entry_id, self.engram_kind, merge_key, _dumps(content), _dumps(tags), _dumps(meta), version,
                created_at, now_iso(),
            ),
        )  # fmt: skip

    def _write(
        self,
        conn: sqlite3.Connection,
        op: str,
        entry: dict[str, Any],
        merge_key: str | None,
        imprint_id: str | None,
        trace_id: str | None,
    ) -> ImprintReceipt:
        if imprint_id is not None:
            seen = conn.execute(
                "SELECT entry_id FROM engram_imprint_seen WHERE imprint_id = ?", (imprint_id,)
            ).fetchone()
            if seen is not None:  # a replay: report the entry as it is now, write nothing
                row = self._row(conn, seen["entry_id"]) if seen["entry_id"] else None
                version = int(row["version"]) if row is not None else None
                return ImprintReceipt(self.engram_id, op, seen["entry_id"], version)
        receipt = self._apply(conn, op, entry, merge_key, trace_id)
        if imprint_id is not None and receipt.error is None:
            conn.execute(
                "INSERT OR REPLACE INTO engram_imprint_seen (imprint_id, entry_id, seen_at) VALUES (?, ?, ?)",
                (imprint_id, receipt.id, now_iso()),
            )
        return receipt

    def _free_id(self, conn: sqlite3.Connection, given: str | None) -> str:
        if given and self._row(conn, given) is None:
            return given
        return new_engram_id()

    def _apply(
        self,
        conn: sqlite3.Connection,
        op: str,
        entry: dict[str, Any],
        merge_key: str | None,
        trace_id: str | None,
    ) -> ImprintReceipt:
        eid = self.engram_id
        if op not in IMPRINT_OPS:
            return ImprintReceipt(eid, op, error=f"unknown op {op!r}")
        if op in ("merge", "upsert") and not merge_key:
            return ImprintReceipt(eid, op, error=f"{op} needs a merge_key")
        given = entry.get("id")
        now = now_iso()
        if op == "delete":
            row = self._row(conn, given) if given else (self._latest(conn, merge_key) if merge_key else None)
            if row is None or row["deleted_at"] is not None:
                return ImprintReceipt(eid, op, given)
            self._journal(conn, trace_id, row["id"])
            conn.execute("UPDATE engram_entries SET deleted_at = ? WHERE id = ?", (now, row["id"]))
            return ImprintReceipt(eid, op, row["id"])
        target = self._latest(conn, merge_key) if merge_key and op in ("merge", "upsert") else None
        if op == "merge" and target is None:
            return ImprintReceipt(eid, op, error=f"no entry with merge_key {merge_key!r}")
        if target is not None:  # upsert onto an existing entry, or merge
            old = _stored(target)
            if op == "upsert":
                content, tags, meta = entry["content"], entry["tags"], entry["meta"]
            else:
                content = deep_merge(old["content"], entry["content"])
                tags = union_tags(old["tags"], entry["tags"])
                meta = {**(old.get("meta") or {}), **entry["meta"]}
            version = old["version"] + 1
            self._journal(conn, trace_id, old["id"])
            self._put(conn, old["id"], content, tags, meta, version, old["created_at"], old.get("merge_key"))
            return ImprintReceipt(eid, op, old["id"], version)
        if op == "add":
            row = self._row(conn, given) if given else None
            if row is not None and row["deleted_at"] is None:
                return ImprintReceipt(eid, op, error=f"entry {given} already exists")
            entry_id = given or new_engram_id()
        else:  # append, or upsert creating
            entry_id = self._free_id(conn, given)
        self._journal(conn, trace_id, entry_id)
        self._put(conn, entry_id, entry["content"], entry["tags"], entry["meta"], 1, now, merge_key)
        return ImprintReceipt(eid, op, entry_id, 1)

    # -- saga ----------------------------------------------------------------------
    async def compensate(self, trace_id: str) -> int:
        def undo(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT entry_id, prior FROM engram_saga_journal WHERE trace_id = ? ORDER BY seq DESC",
                (trace_id,),
            ).fetchall()
            for row in rows:
                if row["prior"] is None:
                    conn.execute("DELETE FROM engram_entries WHERE id = ?", (row["entry_id"],))
                else:
                    prior = json.loads(row["prior"])
                    conn.execute(
                        f"INSERT OR REPLACE INTO engram_entries ({', '.join(_COLUMNS)}) "
                        f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                        tuple(prior.get(c) for c in _COLUMNS),
                    )
            conn.execute("DELETE FROM engram_saga_journal WHERE trace_id = ?", (trace_id,))
            return len(rows)

        return await self._run(undo, transaction=True)

    async def commit(self, trace_id: str) -> None:
        await self._run(
            lambda conn: conn.execute("DELETE FROM engram_saga_journal WHERE trace_id = ?", (trace_id,))
        )

    async def journaled_traces(self) -> list[str]:
        """Traces with journaled writes (tests, debugging)."""

        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT trace_id FROM engram_saga_journal ORDER BY trace_id")
            return [r["trace_id"] for r in rows]

        return await self._run(read)

    async def entries(self) -> list[dict[str, Any]]:
        """Every live entry, oldest first (tests, debugging)."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT * FROM engram_entries WHERE deleted_at IS NULL ORDER BY rowid")
            return [_stored(r) for r in rows]

        return await self._run(read)
