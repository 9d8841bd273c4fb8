"""``PostgresEngram``: an engram in PostgreSQL, shared by any number of processes and machines (§14.3).

* psycopg 3's blocking API in worker threads (``PostgresDatabase``), so the
  backend works under asyncio and trio; a small pool of connections.
* Tables ``cosmonapse_engram_entries`` (content JSONB, tags TEXT[], meta
  JSONB, TIMESTAMPTZ columns, a GIN index on tags) and
  ``cosmonapse_engram_imprint_seen`` are the reference's, plus our
  ``revision`` column (added to tables that lack it); ours too are
  ``cosmonapse_engram_saga_journal`` (the durable saga journal: each row the
  entry's prior row as JSONB, its revision and the revision the write
  produced) and the sequence ``cosmonapse_engram_revision``.
* Every write, compensation and commit is one transaction that first takes a
  transaction-level advisory lock, so writers in every process sharing the
  database are serialised (as SQLite's ``BEGIN IMMEDIATE`` serialises them)
  while reads run in parallel.  Hence idempotent imprints (the imprint id is
  checked and recorded inside the write's transaction) and conflict-aware
  compensation exactly once, across processes.
* Journals of traces that never settle, and imprint ids (the idempotency
  window), are forgotten after ``journal_ttl_s`` (24 h).
* Like the reference and ``SqliteEngram``, reads do not filter by engram id or
  kind: give each engram its own database, or its own schema through the dsn
  (``options=-csearch_path=notes``).
"""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, LiteralString

from ..postgres_db import DEFAULT_STATEMENT_TIMEOUT_S, PostgresDatabase
from ..tombstone_sql import PG_SCHEMA as _TOMBSTONES
from ..tombstone_sql import pg_load, pg_remember
from .base import Engram
from .memory import DEFAULT_JOURNAL_TTL_S
from .model import Hits, ImprintReceipt, clean_entry, first_hits, stored_form
from .saga import CompensationReport, JournalRecord, compensate_trace
from .writes import imprint_once

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["PostgresEngram"]

#: The advisory lock every writer of these tables takes (one key per database).
WRITE_LOCK = zlib.crc32(b"cosmonapse_engram_entries")
#: Rows a recall fetches from the server at a time.
_FETCH = 200

_SCHEMA: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS cosmonapse_engram_entries (
        id TEXT PRIMARY KEY,
        engram_kind TEXT NOT NULL,
        merge_key TEXT,
        content JSONB,
        tags TEXT[] NOT NULL DEFAULT '{}',
        meta JSONB NOT NULL DEFAULT '{}',
        version INTEGER NOT NULL DEFAULT 1,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        deleted_at TIMESTAMPTZ,
        revision BIGINT
    )""",
    "ALTER TABLE cosmonapse_engram_entries ADD COLUMN IF NOT EXISTS revision BIGINT",
    "CREATE INDEX IF NOT EXISTS idx_cosmonapse_engram_kind ON cosmonapse_engram_entries (engram_kind)",
    """CREATE INDEX IF NOT EXISTS idx_cosmonapse_engram_merge_key ON cosmonapse_engram_entries (merge_key)
        WHERE merge_key IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS idx_cosmonapse_engram_updated ON cosmonapse_engram_entries (updated_at)",
    "CREATE INDEX IF NOT EXISTS idx_cosmonapse_engram_tags ON cosmonapse_engram_entries USING GIN (tags)",
    """CREATE TABLE IF NOT EXISTS cosmonapse_engram_imprint_seen (
        imprint_id TEXT PRIMARY KEY,
        entry_id TEXT,
        seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE SEQUENCE IF NOT EXISTS cosmonapse_engram_revision",
    """CREATE TABLE IF NOT EXISTS cosmonapse_engram_saga_journal (
        seq BIGSERIAL PRIMARY KEY,
        trace_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        prior JSONB,
        prior_revision BIGINT,
        produced BIGINT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS idx_cosmonapse_saga_trace ON cosmonapse_engram_saga_journal (trace_id)",
    """CREATE INDEX IF NOT EXISTS idx_cosmonapse_saga_prior
        ON cosmonapse_engram_saga_journal (entry_id, prior_revision)""",
    "CREATE INDEX IF NOT EXISTS idx_cosmonapse_saga_created ON cosmonapse_engram_saga_journal (created_at)",
)
_ENTRY_COLUMNS: LiteralString = (
    "engram_kind, merge_key, content, tags, meta, version, created_at, updated_at, deleted_at, revision"
)
_UPDATE_ALL: LiteralString = (
    f"({_ENTRY_COLUMNS}) = (EXCLUDED.engram_kind, EXCLUDED.merge_key, EXCLUDED.content, EXCLUDED.tags, "
    "EXCLUDED.meta, EXCLUDED.version, EXCLUDED.created_at, EXCLUDED.updated_at, EXCLUDED.deleted_at, "
    "EXCLUDED.revision)"
)
#: Prune old journals at most this often (seconds).
_PRUNE_EVERY_S = 60.0


def _create_schema(conn: Connection[dict[str, Any]]) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))  # concurrent CREATEs race otherwise
    for statement in (*_SCHEMA, *_TOMBSTONES):
        conn.execute(statement)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    return stored_form(
        row["id"], row["content"], list(row["tags"] or []), dict(row["meta"] or {}), int(row["version"] or 1),
        _iso(row["created_at"]), _iso(row["updated_at"]), row["merge_key"],
    )  # fmt: skip


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


class _PostgresTable:
    """The engram's tables inside one transaction, as the shared write and saga rules see them."""

    def __init__(self, conn: Connection[dict[str, Any]], engram_id: str, engram_kind: str) -> None:
        self.conn = conn
        self.engram_id = engram_id
        self.engram_kind = engram_kind

    def _one(self, query: LiteralString, args: tuple[Any, ...]) -> dict[str, Any] | None:
        return self.conn.execute(query, args).fetchone()

    # -- EntryTable ------------------------------------------------------------------
    def live(self, entry_id: str) -> dict[str, Any] | None:
        row = self._one(
            "SELECT * FROM cosmonapse_engram_entries WHERE id = %s AND deleted_at IS NULL", (entry_id,)
        )
        return _stored(row) if row is not None else None

    def latest(self, merge_key: str) -> dict[str, Any] | None:
        row = self._one(
            "SELECT * FROM cosmonapse_engram_entries WHERE merge_key = %s AND deleted_at IS NULL "
            "ORDER BY revision DESC NULLS LAST, updated_at DESC LIMIT 1",
            (merge_key,),
        )
        return _stored(row) if row is not None else None

    def next_revision(self) -> int:
        row = self._one("SELECT nextval('cosmonapse_engram_revision') AS r", ())
        assert row is not None
        return int(row["r"])

    def journal(self, trace_id: str, entry_id: str, produced: int) -> None:
        self.conn.execute(
            "INSERT INTO cosmonapse_engram_saga_journal "
            "(trace_id, entry_id, prior, prior_revision, produced) SELECT %s, %s, "
            "(SELECT to_jsonb(e) FROM cosmonapse_engram_entries e WHERE e.id = %s), "
            "(SELECT revision FROM cosmonapse_engram_entries WHERE id = %s), %s",
            (trace_id, entry_id, entry_id, entry_id, produced),
        )

    def put(self, stored: dict[str, Any], revision: int) -> None:
        self.conn.execute(
            f"INSERT INTO cosmonapse_engram_entries (id, {_ENTRY_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s) "
            f"ON CONFLICT (id) DO UPDATE SET {_UPDATE_ALL}",
            (
                stored["id"], self.engram_kind, stored.get("merge_key"), _jsonb(stored["content"]),
                stored["tags"], _jsonb(stored.get("meta") or {}), stored["version"],
                _when(stored["created_at"]), _when(stored["updated_at"]), revision,
            ),
        )  # fmt: skip

    def remove(self, entry_id: str, revision: int, journaled: bool) -> None:
        self.conn.execute(
            "UPDATE cosmonapse_engram_entries SET deleted_at = clock_timestamp(), revision = %s "
            "WHERE id = %s",
            (revision, entry_id),
        )

    def replayed(self, imprint_id: str, op: str) -> ImprintReceipt | None:
        seen = self._one(
            "SELECT s.entry_id, e.version FROM cosmonapse_engram_imprint_seen s "
            "LEFT JOIN cosmonapse_engram_entries e ON e.id = s.entry_id WHERE s.imprint_id = %s",
            (imprint_id,),
        )
        if seen is None:
            return None
        version = int(seen["version"]) if seen["version"] is not None else None
        return ImprintReceipt(self.engram_id, op, seen["entry_id"], version)

    def remember(self, imprint_id: str, receipt: ImprintReceipt) -> None:
        self.conn.execute(
            "INSERT INTO cosmonapse_engram_imprint_seen (imprint_id, entry_id) VALUES (%s, %s) "
            "ON CONFLICT (imprint_id) DO UPDATE SET entry_id = EXCLUDED.entry_id, seen_at = now()",
            (imprint_id, receipt.id),
        )

    # -- SagaTable -------------------------------------------------------------------
    def journal_records(self, trace_id: str) -> list[JournalRecord]:
        rows = self.conn.execute(
            "SELECT seq, entry_id, prior, prior_revision, produced FROM cosmonapse_engram_saga_journal "
            "WHERE trace_id = %s ORDER BY seq DESC",
            (trace_id,),
        ).fetchall()
        return [
            JournalRecord(r["seq"], r["entry_id"], r["prior"], r["prior_revision"], r["produced"])
            for r in rows
        ]

    def revision_of(self, entry_id: str) -> int | None:
        row = self._one("SELECT revision FROM cosmonapse_engram_entries WHERE id = %s", (entry_id,))
        return int(row["revision"]) if row is not None and row["revision"] is not None else None

    def restore(self, record: JournalRecord) -> None:
        if record.prior is None:
            self.conn.execute("DELETE FROM cosmonapse_engram_entries WHERE id = %s", (record.entry_id,))
            return
        self.conn.execute(
            "INSERT INTO cosmonapse_engram_entries "
            "SELECT * FROM jsonb_populate_record(NULL::cosmonapse_engram_entries, %s) "
            f"ON CONFLICT (id) DO UPDATE SET {_UPDATE_ALL}",
            (_jsonb(record.prior),),
        )

    def splice(self, record: JournalRecord, trace_id: str) -> None:
        self.conn.execute(
            "UPDATE cosmonapse_engram_saga_journal SET prior = %s, prior_revision = %s "
            "WHERE entry_id = %s AND prior_revision = %s AND trace_id <> %s",
            (
                _jsonb(record.prior) if record.prior is not None else None, record.prior_revision,
                record.entry_id, record.produced, trace_id,
            ),
        )  # fmt: skip

    def forget(self, trace_id: str) -> None:
        self.conn.execute("DELETE FROM cosmonapse_engram_saga_journal WHERE trace_id = %s", (trace_id,))


class PostgresEngram(Engram):
    """An engram in the PostgreSQL database at *dsn* (``postgresql://user:pass@host:5432/db``)."""

    default_kind = "relational"

    def __init__(
        self,
        dsn: str,
        engram_id: str = "engram-postgres",
        engram_kind: str | None = None,
        *,
        capabilities: tuple[str, ...] | list[str] = (),
        version: str | None = None,
        min_size: int = 1,
        max_size: int = 5,
        journal_ttl_s: float = DEFAULT_JOURNAL_TTL_S,
        connect_timeout_s: float = 10.0,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        super().__init__(
            engram_id=engram_id, engram_kind=engram_kind, capabilities=capabilities, version=version
        )
        self.journal_ttl_s = journal_ttl_s
        self._db = PostgresDatabase(
            dsn,
            _create_schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )
        self._last_prune = 0.0

    def _table(self, conn: Connection[dict[str, Any]]) -> _PostgresTable:
        return _PostgresTable(conn, self.engram_id, self.engram_kind)

    async def connect(self) -> None:
        await self._db.open()

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
        # Exact keys narrow the scan on the server; text, since/until and the score are
        # applied here by the same code as the other backends (score_entry).
        sql: LiteralString = "SELECT * FROM cosmonapse_engram_entries WHERE deleted_at IS NULL"
        args: list[Any] = []
        if query.get("merge_key") is not None:
            sql += " AND merge_key = %s"
            args.append(str(query["merge_key"]))
        if query.get("id") is not None:
            sql += " AND id = %s"
            args.append(str(query["id"]))
        if query.get("tag") is not None:
            sql += " AND %s = ANY(tags)"
            args.append(str(query["tag"]))
        wanted = (filters or {}).get("tags")
        if isinstance(wanted, list | tuple) and wanted:
            sql += " AND tags @> %s"
            args.append([str(t) for t in wanted])
        sql += " ORDER BY updated_at DESC, revision DESC NULLS LAST"

        def read(conn: Connection[dict[str, Any]]) -> Hits:
            with conn.cursor(name="cosmonapse_recall") as cursor:  # server-side: fetched in batches
                cursor.itersize = _FETCH
                cursor.execute(sql, args)
                return first_hits(map(_stored, cursor), query, filters, min_confidence)

        return await self._db.run(read, transaction=True)  # a named cursor lives in a transaction

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

        def write(conn: Connection[dict[str, Any]]) -> ImprintReceipt:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            receipt = imprint_once(
                self._table(conn), self.engram_id, op, clean, merge_key, imprint_id, trace_id,
                echo_missing_delete=True,
            )  # fmt: skip
            self._prune(conn)
            return receipt

        r = await self._db.run(write, transaction=True)
        took = round((time.perf_counter() - started) * 1000, 3)
        return ImprintReceipt(self.engram_id, op, r.id, r.version, took, r.error)

    def _prune(self, conn: Connection[dict[str, Any]]) -> None:
        """Forget journals and imprint ids older than ``journal_ttl_s`` (at most once a minute)."""
        now = time.monotonic()
        if now - self._last_prune > _PRUNE_EVERY_S:
            self._last_prune = now
            ttl = (float(self.journal_ttl_s),)
            older: LiteralString = " < now() - make_interval(secs => %s)"
            conn.execute("DELETE FROM cosmonapse_engram_saga_journal WHERE created_at" + older, ttl)
            conn.execute("DELETE FROM cosmonapse_engram_imprint_seen WHERE seen_at" + older, ttl)

    # -- saga ----------------------------------------------------------------------
    async def compensate(self, trace_id: str) -> CompensationReport:
        def undo(conn: Connection[dict[str, Any]]) -> CompensationReport:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return compensate_trace(self._table(conn), self.engram_id, trace_id)

        return await self._db.run(undo, transaction=True)

    async def commit(self, trace_id: str) -> None:
        def forget(conn: Connection[dict[str, Any]]) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._table(conn).forget(trace_id)

        await self._db.run(forget, transaction=True)

    async def journaled_traces(self) -> list[str]:
        """Traces with journaled writes (tests, debugging)."""

        def read(conn: Connection[dict[str, Any]]) -> list[str]:
            rows = conn.execute("SELECT DISTINCT trace_id FROM cosmonapse_engram_saga_journal").fetchall()
            return sorted(r["trace_id"] for r in rows)

        return await self._db.run(read)

    async def entries(self) -> list[dict[str, Any]]:
        """Every live entry, oldest write first (tests, debugging)."""

        def read(conn: Connection[dict[str, Any]]) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT * FROM cosmonapse_engram_entries WHERE deleted_at IS NULL "
                "ORDER BY revision NULLS FIRST, updated_at"
            ).fetchall()
            return [_stored(r) for r in rows]

        return await self._db.run(read)

    # -- STOP tombstones (stops.StopLedger): shared by every process on this database --
    async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
        await self._db.run(lambda conn: pg_remember(conn, trace_id, ttl_s, max_entries), transaction=True)

    async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
        return await self._db.run(lambda conn: pg_load(conn, max_entries))
