"""``PostgresRegistryStore``: the registry in PostgreSQL, shared by every Dendrite of a namespace (§21).

The reference's table ``cosmonapse_neurons`` (capabilities JSONB, TIMESTAMPTZ
times, an index on status).  psycopg's blocking API runs in worker threads
(``PostgresDatabase``), so the store serves asyncio and trio.  Each operation
is one statement or one transaction, and the liveness sweep is a single
``UPDATE … RETURNING``: when Dendrites in several processes sweep at once,
each stale neuron is marked — and reported — by exactly one of them, and a
heartbeat that lands first keeps its neuron alive.

One store per namespace, as with every backend: give each namespace its own
database or schema (``options=-csearch_path=prod`` in the dsn).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..postgres_db import DEFAULT_STATEMENT_TIMEOUT_S, PostgresDatabase
from ..tombstone_sql import PG_SCHEMA as _TOMBSTONES
from ..tombstone_sql import pg_load, pg_remember
from .record import NeuronRecord
from .store import filter_records

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["PostgresRegistryStore"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cosmonapse_neurons (
        neuron_id TEXT PRIMARY KEY,
        capabilities JSONB NOT NULL DEFAULT '[]',
        version TEXT,
        status TEXT NOT NULL DEFAULT 'registered',
        last_heartbeat TIMESTAMPTZ,
        registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS idx_cosmonapse_neurons_status ON cosmonapse_neurons (status)",
)
#: Statuses a heartbeat may set explicitly (anything else, like the reference's "ok", is ignored).
_HEARTBEAT_STATUSES = ("registered", "draining")
_SCHEMA_LOCK = 0x636F736D  # serialises concurrent CREATEs of the table across processes


def _create_schema(conn: Connection[dict[str, Any]]) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    for statement in (*_SCHEMA, *_TOMBSTONES):
        conn.execute(statement)


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def _record(row: dict[str, Any]) -> NeuronRecord:
    return NeuronRecord(
        neuron_id=row["neuron_id"],
        capabilities=row["capabilities"] or [],
        version=row["version"],
        status=row["status"],
        last_heartbeat=row["last_heartbeat"],
        registered_at=row["registered_at"],
    )


class PostgresRegistryStore:
    """A registry in the PostgreSQL database at *dsn* (``postgresql://user:pass@host:5432/db``)."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 5,
        connect_timeout_s: float = 10.0,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        self._db = PostgresDatabase(
            dsn,
            _create_schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )

    def __repr__(self) -> str:
        return "<PostgresRegistryStore>"

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def upsert(self, record: NeuronRecord) -> None:
        def write(conn: Connection[dict[str, Any]]) -> None:
            conn.execute(
                "INSERT INTO cosmonapse_neurons (neuron_id, capabilities, version, status, last_heartbeat, "
                "registered_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (neuron_id) DO UPDATE SET "
                "capabilities = EXCLUDED.capabilities, version = EXCLUDED.version, "
                "status = EXCLUDED.status, last_heartbeat = EXCLUDED.last_heartbeat",
                (
                    record.neuron_id, _jsonb(list(record.capabilities)), record.version, record.status,
                    record.last_heartbeat, record.registered_at,
                ),
            )  # fmt: skip

        await self._db.run(write)

    async def mark_deregistered(self, neuron_id: str) -> None:
        def write(conn: Connection[dict[str, Any]]) -> None:
            conn.execute(
                "UPDATE cosmonapse_neurons SET status = 'deregistered' WHERE neuron_id = %s", (neuron_id,)
            )

        await self._db.run(write)

    async def touch_heartbeat(self, neuron_id: str, ts: datetime, status: str | None = None) -> None:
        def write(conn: Connection[dict[str, Any]]) -> None:
            conn.execute(
                "INSERT INTO cosmonapse_neurons (neuron_id, last_heartbeat, registered_at) "
                "VALUES (%s, %s, %s) ON CONFLICT (neuron_id) "
                "DO UPDATE SET last_heartbeat = EXCLUDED.last_heartbeat "
                "WHERE cosmonapse_neurons.status <> 'deregistered'",
                (neuron_id, ts, ts),
            )
            if status in _HEARTBEAT_STATUSES:
                conn.execute(
                    "UPDATE cosmonapse_neurons SET status = %s "
                    "WHERE neuron_id = %s AND status <> 'deregistered'",
                    (status, neuron_id),
                )

        await self._db.run(write, transaction=True)

    async def get(self, neuron_id: str) -> NeuronRecord | None:
        def read(conn: Connection[dict[str, Any]]) -> NeuronRecord | None:
            row = conn.execute(
                "SELECT * FROM cosmonapse_neurons WHERE neuron_id = %s", (neuron_id,)
            ).fetchone()
            return _record(row) if row is not None else None

        return await self._db.run(read)

    async def records(
        self, capability: str | None = None, include_deregistered: bool = False
    ) -> list[NeuronRecord]:
        def read(conn: Connection[dict[str, Any]]) -> list[dict[str, Any]]:
            if capability is None:
                return conn.execute("SELECT * FROM cosmonapse_neurons").fetchall()
            return conn.execute(
                "SELECT * FROM cosmonapse_neurons WHERE capabilities @> %s", (_jsonb([capability]),)
            ).fetchall()

        rows = await self._db.run(read)
        return filter_records([_record(r) for r in rows], capability, include_deregistered)

    async def mark_stale(self, cutoff: datetime, keep: frozenset[str] = frozenset()) -> list[str]:
        def sweep(conn: Connection[dict[str, Any]]) -> list[str]:
            rows = conn.execute(
                "UPDATE cosmonapse_neurons SET status = 'deregistered' WHERE status <> 'deregistered' "
                "AND COALESCE(last_heartbeat, registered_at) < %s AND NOT (neuron_id = ANY(%s)) "
                "RETURNING neuron_id",
                (cutoff, sorted(keep)),
            ).fetchall()
            return sorted(r["neuron_id"] for r in rows)

        return await self._db.run(sweep)

    # -- STOP tombstones (stops.StopLedger): shared by every process on this database --
    async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
        await self._db.run(lambda conn: pg_remember(conn, trace_id, ttl_s, max_entries), transaction=True)

    async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
        return await self._db.run(lambda conn: pg_load(conn, max_entries))
