"""Conflict-aware compensation, backend by backend (issue 9 item 3).

A rollback restores an entry only while it is still at the revision the trace
wrote; otherwise the conflict is reported and logged, other traces' writes are
never touched, and a rolled-back write never comes back — whatever the order
of the rollbacks.  A Hypothesis test checks that against a model: after any
interleaving of writes and settlements, every entry holds what the last write
of a trace that was not rolled back left there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosmonapse import Engram, InMemoryEngram, SqliteEngram
from cosmonapse.engram import CompensationConflict, CompensationReport, PostgresEngram

pytestmark = pytest.mark.anyio
BACKENDS = ["memory", "sqlite", "postgres"]

Factory = Callable[[], Engram]


@pytest.fixture(params=BACKENDS)
def make_engram(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Builds engram instances on one store (several instances of a durable backend share it)."""
    if request.param == "memory":
        shared = InMemoryEngram("notes")
        return lambda: shared
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return lambda: PostgresEngram(dsn, "notes")
    return lambda: SqliteEngram(str(tmp_path / "saga.db"), "notes")


@pytest.fixture
async def engram(make_engram: Factory) -> AsyncIterator[Engram]:
    async with make_engram() as e:
        yield e


async def value(e: Engram, key: str) -> Any:
    hits = await e.recall({"merge_key": key})
    return hits[0].entry["content"] if hits else None


async def by_id(e: Engram, entry_id: str) -> Any:
    hits = await e.recall({"id": entry_id})
    return hits[0].entry["content"] if hits else None


async def test_rolling_back_a_leaves_bs_committed_write(
    engram: Engram, caplog: pytest.LogCaptureFixture
) -> None:
    await engram.imprint("upsert", {"content": "v0"}, merge_key="k")
    a = await engram.imprint("upsert", {"content": "A"}, merge_key="k", trace_id="trc_a")
    await engram.imprint("upsert", {"content": "B"}, merge_key="k", trace_id="trc_b")
    await engram.commit("trc_b")  # B's FINAL
    with caplog.at_level(logging.WARNING, logger="cosmonapse.engram"):
        report = await engram.compensate("trc_a")
    assert report.restored == 0 and report.conflicted == [a.id]
    assert report.trace_id == "trc_a" and report.engram_id == "notes"
    (conflict,) = report.conflicts
    assert conflict.wrote is not None and conflict.found is not None and conflict.found > conflict.wrote
    assert await value(engram, "k") == "B"  # the committed write stays
    assert any("trc_a" in r.getMessage() and str(a.id) in r.getMessage() for r in caplog.records)
    assert await engram.compensate("trc_b") == CompensationReport("notes", "trc_b")  # committed: nothing
    assert await value(engram, "k") == "B"


@pytest.mark.parametrize("order", [("trc_a", "trc_b"), ("trc_b", "trc_a")], ids=["a-then-b", "b-then-a"])
async def test_rolling_back_both_never_brings_a_back(engram: Engram, order: tuple[str, str]) -> None:
    await engram.imprint("upsert", {"content": "v0"}, merge_key="k")
    await engram.imprint("upsert", {"content": "A"}, merge_key="k", trace_id="trc_a")
    await engram.imprint("upsert", {"content": "B"}, merge_key="k", trace_id="trc_b")
    first, second = (await engram.compensate(order[0])), (await engram.compensate(order[1]))
    assert await value(engram, "k") == "v0"
    if order[0] == "trc_a":  # A is under B: a conflict, and B then restores v0, not A
        assert (first.restored, len(first.conflicts), second.restored) == (0, 1, 1)
    else:  # newest first: plain undo, twice
        assert (first.restored, second.restored) == (1, 1) and not first.conflicts + second.conflicts
    assert await engram.journaled_traces() == []  # type: ignore[attr-defined]


async def test_an_untraced_write_since_is_a_conflict_and_stays(engram: Engram) -> None:
    await engram.imprint("add", {"id": "x", "content": "v0"})
    await engram.imprint("delete", {"id": "x"}, trace_id="trc_a")
    await engram.imprint("add", {"id": "x", "content": "someone else"})  # no trace: never rolled back
    report = await engram.compensate("trc_a")
    assert report.conflicted == ["x"] and report.restored == 0
    assert await by_id(engram, "x") == "someone else"


async def test_deletes_and_re_adds_by_other_traces(engram: Engram) -> None:
    await engram.imprint("add", {"id": "x", "content": "v0"})
    await engram.imprint("delete", {"id": "x"}, trace_id="trc_a")
    await engram.imprint("add", {"id": "x", "content": "B"}, trace_id="trc_b")
    assert (await engram.compensate("trc_a")).conflicted == ["x"]
    assert await by_id(engram, "x") == "B"
    assert (await engram.compensate("trc_b")).restored == 1
    assert await by_id(engram, "x") == "v0"  # neither A's delete nor B's add survives
    # And a delete by a trace of an entry another trace created: B's add, A's delete, A first.
    await engram.imprint("add", {"id": "y", "content": "B"}, trace_id="trc_c")
    await engram.imprint("delete", {"id": "y"}, trace_id="trc_d")
    assert (await engram.compensate("trc_c")).conflicted == ["y"]
    assert await by_id(engram, "y") is None  # D's delete still holds
    assert (await engram.compensate("trc_d")).restored == 1
    assert await by_id(engram, "y") is None  # and with both gone, y never existed


async def test_a_trace_writing_around_another(engram: Engram) -> None:
    await engram.imprint("upsert", {"content": "v0"}, merge_key="k")
    await engram.imprint("upsert", {"content": "A1"}, merge_key="k", trace_id="trc_a")
    await engram.imprint("merge", {"content": {"note": "B"}}, merge_key="k", trace_id="trc_b")
    await engram.imprint("upsert", {"content": "A2"}, merge_key="k", trace_id="trc_a")
    report = await engram.compensate("trc_a")
    assert report.restored == 1 and len(report.conflicts) == 1  # A2 undone; A1 is under B's merge
    assert await value(engram, "k") == {"note": "B"}  # B's write, which merged into A1, stays
    assert (await engram.compensate("trc_b")).restored == 1
    assert await value(engram, "k") == "v0"


async def test_compensation_is_exactly_once_under_concurrent_calls(make_engram: Factory) -> None:
    async with make_engram() as one, make_engram() as two:
        await one.imprint("upsert", {"content": "v0"}, merge_key="k")
        for i in range(5):
            await one.imprint("upsert", {"content": i}, merge_key="k", trace_id="trc_a")
            await one.imprint("append", {"content": f"extra {i}"}, trace_id="trc_a")
        reports: list[CompensationReport] = []

        async def undo(e: Engram) -> None:
            reports.append(await e.compensate("trc_a"))

        async with anyio.create_task_group() as tg:
            for e in (one, two, one, two):
                tg.start_soon(undo, e)
        assert sum(r.restored for r in reports) == 10 and not any(r.conflicts for r in reports)
        assert await value(two, "k") == "v0" and len(await two.recall({})) == 1


async def test_report_shapes() -> None:
    report = CompensationReport("e", "t", 2, (CompensationConflict("x", 3, 5),))
    assert report.to_payload() == {"engram_id": "e", "restored": 2, "conflicts": ["x"]}
    assert report.conflicts[0].to_payload() == {"entry_id": "x", "wrote": 3, "found": 5}
    assert CompensationReport.coerce(4, "e", "t") == CompensationReport("e", "t", 4)  # an older backend's int
    assert CompensationReport.coerce(None, "e", "t") == CompensationReport("e", "t")
    assert CompensationReport.coerce(report, "x", "y") is report


async def test_sqlite_conflicts_and_splices_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "restart.db")
    async with SqliteEngram(path, "notes") as first:
        await first.imprint("upsert", {"content": "v0"}, merge_key="k")
        await first.imprint("upsert", {"content": "A"}, merge_key="k", trace_id="trc_a")
        await first.imprint("upsert", {"content": "B"}, merge_key="k", trace_id="trc_b")
        assert len((await first.compensate("trc_a")).conflicts) == 1
    async with SqliteEngram(path, "notes") as second:  # a new process, say
        assert (await second.compensate("trc_b")).restored == 1
        assert await value(second, "k") == "v0"


async def test_sqlite_upgrades_a_file_without_revisions(tmp_path: Path) -> None:
    """A file from before revisions (or the reference's): columns added; old journal rows never restore."""
    import sqlite3

    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE engram_entries (id TEXT PRIMARY KEY, engram_kind TEXT NOT NULL, merge_key TEXT,
            content TEXT, tags TEXT DEFAULT '[]', meta TEXT DEFAULT '{}', version INTEGER DEFAULT 1,
            created_at TEXT, updated_at TEXT, deleted_at TEXT);
        CREATE TABLE engram_saga_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT NOT NULL,
            entry_id TEXT NOT NULL, prior TEXT, created_at TEXT NOT NULL);
        INSERT INTO engram_entries VALUES ('old', 'relational', NULL, '"written before"', '[]', '{}', 1,
            '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', NULL);
        INSERT INTO engram_saga_journal (trace_id, entry_id, prior, created_at)
            VALUES ('trc_old', 'old', NULL, '2099-01-01T00:00:00.000000Z');
        """
    )
    conn.close()
    async with SqliteEngram(path, "notes") as e:
        report = await e.compensate("trc_old")
        assert report.restored == 0 and report.conflicted == ["old"]  # unknown revision: left alone
        assert await by_id(e, "old") == "written before"
        await e.imprint("upsert", {"id": "old", "content": "new"}, merge_key="m", trace_id="trc_new")
        assert (await e.compensate("trc_new")).restored == 1


# -- a model of the rule ------------------------------------------------------------------------

KEYS = ("k0", "k1")
TRACES = ("t0", "t1", "t2", "t3")

write_step = st.tuples(
    st.just("write"), st.sampled_from((*TRACES, None)), st.sampled_from(("upsert", "add", "delete")),
    st.sampled_from(KEYS),
)  # fmt: skip
settle_step = st.tuples(st.just("settle"), st.sampled_from(TRACES), st.booleans(), st.just(""))
steps = st.lists(st.one_of(write_step, settle_step), max_size=30)


class Model:
    """Per key, the writes not rolled back, in order; an entry holds what the last one left."""

    def __init__(self) -> None:
        self.writes: dict[str, list[tuple[str | None, Any]]] = {k: [] for k in KEYS}

    def now(self, key: str) -> Any:
        return self.writes[key][-1][1] if self.writes[key] else None

    def write(self, trace: str | None, op: str, key: str, content: str) -> None:
        if op == "delete":
            if self.now(key) is not None:
                self.writes[key].append((trace, None))
        elif op == "add":
            if self.now(key) is None:
                self.writes[key].append((trace, content))
        else:
            self.writes[key].append((trace, content))

    def roll_back(self, trace: str) -> None:
        for key in KEYS:
            self.writes[key] = [w for w in self.writes[key] if w[0] != trace]


async def run_model(e: Engram, program: list[tuple[Any, ...]]) -> None:
    model = Model()
    settled: set[str] = set()
    for n, (kind, trace, how, key) in enumerate(program):
        if kind == "write":
            if trace in settled:
                continue  # a settled trace writes no more (the host refuses STOPped traces)
            content = f"{trace}:{n}"
            entry = {"id": key, "content": content}
            receipt = await e.imprint(how, entry, merge_key=key, trace_id=trace)
            if receipt.error is None:
                model.write(trace, how, key, content)
        elif trace not in settled:
            settled.add(trace)
            if how:
                await e.compensate(trace)
                model.roll_back(trace)
            else:
                await e.commit(trace)
    for trace in TRACES:  # every trace still open ends with a rollback
        if trace not in settled:
            await e.compensate(trace)
            model.roll_back(trace)
    for key in KEYS:
        assert await by_id(e, key) == model.now(key), (key, program)


async def empty_postgres(dsn: str) -> PostgresEngram:
    e = PostgresEngram(dsn, "m")
    await e.connect()

    def wipe(conn: Any) -> None:
        conn.execute(
            "TRUNCATE cosmonapse_engram_entries, cosmonapse_engram_saga_journal, "
            "cosmonapse_engram_imprint_seen"
        )

    await e._db.run(wipe)
    return e


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps)
async def test_end_state_matches_the_model(
    backend: str, program: list[tuple[Any, ...]], request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        e: Engram = await empty_postgres(request.getfixturevalue("postgres_dsn"))
    else:
        e = InMemoryEngram("m") if backend == "memory" else SqliteEngram(":memory:", "m")
    async with e:
        await run_model(e, program)
