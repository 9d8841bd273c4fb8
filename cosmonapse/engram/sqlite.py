"""``SqliteEngram``: an engram in one SQLite file, with a durable saga journal (§14.3).

* SQLite runs off the event loop (``anyio.to_thread.run_sync``) on one
  connection per backend, which an ``anyio.Lock`` (one thread at a time) and a
  ``threading.Lock`` (belt and braces) guard.  WAL mode lets readers of the
  same file proceed while we write; every write is a ``BEGIN IMMEDIATE``
  transaction, so several processes may share one file.
* Tables ``engram_entries`` and ``engram_imprint_seen`` are the reference's
  (§14.3) plus one column of ours, ``revision`` (added to files that lack it),
  so a file written by either can be read by the other.  Deletes are soft
  (``deleted_at``).
* ``engram_saga_journal`` and ``engram_revision`` are ours: one journal row per
  journaled write holding the entry's full prior row (NULL when the write
  created it), the revision it had and the revision the write produced; the
  revision counter only goes up.  The write, its journal row and its
  idempotency row commit in one transaction, and a compensation (see ``saga``)
  reads, restores, splices and deletes the journal in one transaction —
  exactly once, even after a restart or a duplicate STOP.
* Journals of traces that never settle, and imprint ids (the idempotency
  window), are forgotten after ``journal_ttl_s`` (24 h).
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ..sqlite_db import SqliteDatabase
from ..tombstone_sql import SQLITE_SCHEMA as _TOMBSTONES
from ..tombstone_sql import sqlite_load, sqlite_remember
from .base import Engram
from .memory import DEFAULT_JOURNAL_TTL_S
from .model import Hits, ImprintReceipt, clean_entry, first_hits, now_iso, stored_form
from .saga import CompensationReport, JournalRecord, compensate_trace
from .writes import imprint_once

__all__ = ["SqliteEngram"]

_COLUMNS = (
    "id", "engram_kind", "merge_key", "content", "tags", "meta", "version", "created_at", "updated_at",
    "deleted_at", "revision",
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
    deleted_at TEXT,
    revision INTEGER
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
    created_at TEXT NOT NULL,
    prior_revision INTEGER,
    produced INTEGER
);
CREATE INDEX IF NOT EXISTS idx_engram_saga_journal_trace ON engram_saga_journal(trace_id);
CREATE TABLE IF NOT EXISTS engram_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
"""
#: Columns older files (ours before revisions, or the reference's) may lack.
_ADDED_COLUMNS = (
    ("engram_entries", "revision"),
    ("engram_saga_journal", "prior_revision"),
    ("engram_saga_journal", "produced"),
)
#: Prune old journals at most this often (seconds).
_PRUNE_EVERY_S = 60.0


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column in _ADDED_COLUMNS:
        have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_engram_saga_journal_prior "
        "ON engram_saga_journal(entry_id, prior_revision)"
    )


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


class _SqliteTable:
    """The engram's tables inside one transaction, as the shared write and saga rules see them."""

    def __init__(self, conn: sqlite3.Connection, engram_id: str, engram_kind: str) -> None:
        self.conn = conn
        self.engram_id = engram_id
        self.engram_kind = engram_kind

    def _row(self, entry_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM engram_entries WHERE id = ?", (entry_id,)
        ).fetchone()
        return row

    # -- EntryTable ------------------------------------------------------------------
    def live(self, entry_id: str) -> dict[str, Any] | None:
        row = self._row(entry_id)
        return _stored(row) if row is not None and row["deleted_at"] is None else None

    def latest(self, merge_key: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM engram_entries WHERE merge_key = ? AND deleted_at IS NULL "
            "ORDER BY updated_at DESC, rowid DESC LIMIT 1",
            (merge_key,),
        ).fetchone()
        return _stored(row) if row is not None else None

    def next_revision(self) -> int:
        self.conn.execute(
            "INSERT INTO engram_revision (id, value) VALUES (1, 1) "
            "ON CONFLICT(id) DO UPDATE SET value = value + 1"
        )
        value: int = self.conn.execute("SELECT value FROM engram_revision WHERE id = 1").fetchone()[0]
        return value

    def journal(self, trace_id: str, entry_id: str, produced: int) -> None:
        row = self._row(entry_id)
        prior = None
        if row is not None:
            names = row.keys()  # iterating a Row yields its values
            prior = _dumps({c: row[c] for c in names if c in _COLUMNS})
        self.conn.execute(
            "INSERT INTO engram_saga_journal (trace_id, entry_id, prior, prior_revision, produced, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (trace_id, entry_id, prior, row["revision"] if row is not None else None, produced, now_iso()),
        )

    def put(self, stored: dict[str, Any], revision: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO engram_entries (id, engram_kind, merge_key, content, tags, meta, "
            "version, created_at, updated_at, deleted_at, revision) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (
                stored["id"], self.engram_kind, stored.get("merge_key"), _dumps(stored["content"]),
                _dumps(stored["tags"]), _dumps(stored.get("meta") or {}), stored["version"],
                stored["created_at"], stored["updated_at"], revision,
            ),
        )  # fmt: skip

    def remove(self, entry_id: str, revision: int, journaled: bool) -> None:
        self.conn.execute(
            "UPDATE engram_entries SET deleted_at = ?, revision = ? WHERE id = ?",
            (now_iso(), revision, entry_id),
        )

    def replayed(self, imprint_id: str, op: str) -> ImprintReceipt | None:
        seen = self.conn.execute(
            "SELECT entry_id FROM engram_imprint_seen WHERE imprint_id = ?", (imprint_id,)
        ).fetchone()
        if seen is None:
            return None
        # A replay: report the entry as it is now, write nothing.
        row = self._row(seen["entry_id"]) if seen["entry_id"] else None
        return ImprintReceipt(
            self.engram_id, op, seen["entry_id"], int(row["version"]) if row is not None else None
        )

    def remember(self, imprint_id: str, receipt: ImprintReceipt) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO engram_imprint_seen (imprint_id, entry_id, seen_at) VALUES (?, ?, ?)",
            (imprint_id, receipt.id, now_iso()),
        )

    # -- SagaTable -------------------------------------------------------------------
    def journal_records(self, trace_id: str) -> list[JournalRecord]:
        rows = self.conn.execute(
            "SELECT seq, entry_id, prior, prior_revision, produced FROM engram_saga_journal "
            "WHERE trace_id = ? ORDER BY seq DESC",
            (trace_id,),
        ).fetchall()
        return [
            JournalRecord(r["seq"], r["entry_id"], r["prior"], r["prior_revision"], r["produced"])
            for r in rows
        ]

    def revision_of(self, entry_id: str) -> int | None:
        row = self.conn.execute("SELECT revision FROM engram_entries WHERE id = ?", (entry_id,)).fetchone()
        return row["revision"] if row is not None else None

    def restore(self, record: JournalRecord) -> None:
        if record.prior is None:
            self.conn.execute("DELETE FROM engram_entries WHERE id = ?", (record.entry_id,))
            return
        prior = json.loads(record.prior)
        self.conn.execute(
            f"INSERT OR REPLACE INTO engram_entries ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
            tuple(prior.get(c) for c in _COLUMNS),
        )

    def splice(self, record: JournalRecord, trace_id: str) -> None:
        self.conn.execute(
            "UPDATE engram_saga_journal SET prior = ?, prior_revision = ? "
            "WHERE entry_id = ? AND prior_revision = ? AND trace_id != ?",
            (record.prior, record.prior_revision, record.entry_id, record.produced, trace_id),
        )

    def forget(self, trace_id: str) -> None:
        self.conn.execute("DELETE FROM engram_saga_journal WHERE trace_id = ?", (trace_id,))


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
        self.path: str = str(path)
        self.journal_ttl_s = journal_ttl_s
        self._db = SqliteDatabase(self.path, _SCHEMA + _TOMBSTONES, _migrate)
        self._last_prune = 0.0

    def _table(self, conn: sqlite3.Connection) -> _SqliteTable:
        return _SqliteTable(conn, self.engram_id, self.engram_kind)

    async def connect(self) -> None:
        await self._db.run(lambda conn: None)

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
            return first_hits(map(_stored, conn.execute(sql, args)), query, filters, min_confidence)

        return await self._db.run(read)

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
            table = self._table(conn)
            receipt = imprint_once(
                table, self.engram_id, op, clean, merge_key, imprint_id, trace_id, echo_missing_delete=True
            )
            self._prune(conn)
            return receipt

        r = await self._db.run(write, transaction=True)
        took = round((time.perf_counter() - started) * 1000, 3)
        return ImprintReceipt(self.engram_id, op, r.id, r.version, took, r.error)

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Forget journals and imprint ids older than ``journal_ttl_s`` (at most once a minute)."""
        now = time.monotonic()
        if now - self._last_prune > _PRUNE_EVERY_S:
            self._last_prune = now
            cutoff = (datetime.now(UTC) - timedelta(seconds=self.journal_ttl_s)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            conn.execute("DELETE FROM engram_saga_journal WHERE created_at < ?", (cutoff,))
            conn.execute("DELETE FROM engram_imprint_seen WHERE seen_at < ?", (cutoff,))

    # -- saga ----------------------------------------------------------------------
    async def compensate(self, trace_id: str) -> CompensationReport:
        return await self._db.run(
            lambda conn: compensate_trace(self._table(conn), self.engram_id, trace_id), transaction=True
        )

    async def commit(self, trace_id: str) -> None:
        await self._db.run(lambda conn: self._table(conn).forget(trace_id), transaction=True)

    async def journaled_traces(self) -> list[str]:
        """Traces with journaled writes (tests, debugging)."""

        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT trace_id FROM engram_saga_journal ORDER BY trace_id")
            return [r["trace_id"] for r in rows]

        return await self._db.run(read)

    async def entries(self) -> list[dict[str, Any]]:
        """Every live entry, oldest first (tests, debugging)."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT * FROM engram_entries WHERE deleted_at IS NULL ORDER BY rowid")
            return [_stored(r) for r in rows]

        return await self._db.run(read)

    # -- STOP tombstones (stops.StopLedger): kept in the engram's file when no registry store has them --
    async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
        await self._db.run(lambda conn: sqlite_remember(conn, trace_id, ttl_s, max_entries), transaction=True)

    async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
        return await self._db.run(lambda conn: sqlite_load(conn, max_entries))
