"""Engram backends (in-memory and SQLite): data model, ops, idempotency, saga journal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cosmonapse import Engram, InMemoryEngram, SqliteEngram
from cosmonapse.engram import PostgresEngram
from cosmonapse.engram.model import Hit, ImprintReceipt, deep_merge, score_entry

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def engram(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engram]:
    if request.param == "postgres":
        e: Engram = PostgresEngram(request.getfixturevalue("postgres_dsn"))
    elif request.param == "sqlite":
        e = SqliteEngram(str(tmp_path / "e.db"))
    else:
        e = InMemoryEngram()
    async with e:
        yield e


async def entries(e: Engram) -> list[dict[str, Any]]:
    return await e.entries()  # type: ignore[attr-defined, no-any-return]


async def test_add_append_and_recall(engram: Engram) -> None:
    r = await engram.imprint("add", {"id": "a", "content": {"text": "Hello World"}, "tags": ["x"], "junk": 1})
    assert (r.id, r.version, r.error, r.op) == ("a", 1, None, "add")
    dup = await engram.imprint("add", {"id": "a", "content": "again"})
    assert dup.error and "exists" in dup.error
    r2 = await engram.imprint("append", {"id": "a", "content": "other", "tags": ["y"]})
    assert r2.id and r2.id != "a" and r2.id.startswith("eng_")
    hits = await engram.recall({"text": "hello"})
    assert [h.id for h in hits] == ["a"]
    stored = hits[0].entry
    assert set(stored) == {"id", "content", "tags", "version", "created_at", "updated_at"}
    assert stored["content"] == {"text": "Hello World"} and stored["tags"] == ["x"]
    assert 0 < hits[0].score <= 1
    assert [h.id for h in await engram.recall({"tag": "y"})] == [r2.id]
    assert len(await engram.recall({})) == 2
    assert await engram.recall({"text": "nothing like it"}) == []
    assert [h.id for h in await engram.recall({}, filters={"tags": ["x"]})] == ["a"]


async def test_top_k_truncates(engram: Engram) -> None:
    for i in range(5):
        await engram.imprint("append", {"content": f"n{i}"})
    hits = await engram.recall({"top_k": 3})
    assert len(hits) == 3 and hits.truncated  # type: ignore[attr-defined]
    assert not (await engram.recall({"top_k": 5})).truncated  # type: ignore[attr-defined]


async def test_upsert_merge_delete_by_merge_key(engram: Engram) -> None:
    missing = await engram.imprint("merge", {"content": {"a": 1}}, merge_key="k")
    assert missing.error
    first = await engram.imprint("upsert", {"content": {"a": 1, "l": [1]}, "tags": ["t1"]}, merge_key="k")
    assert first.version == 1
    second = await engram.imprint("upsert", {"content": {"b": 2}, "tags": ["t2"]}, merge_key="k")
    assert (second.id, second.version) == (first.id, 2)
    merged = await engram.imprint("merge", {"content": {"c": 3, "b": 4}, "tags": ["t3"]}, merge_key="k")
    assert (merged.id, merged.version) == (first.id, 3)
    (hit,) = await engram.recall({"merge_key": "k"})
    assert hit.entry["content"] == {"b": 4, "c": 3}
    assert hit.entry["tags"] == ["t2", "t3"] and hit.entry["merge_key"] == "k"
    gone = await engram.imprint("delete", {}, merge_key="k")
    assert gone.id == first.id and gone.error is None
    assert await engram.recall({"merge_key": "k"}) == []
    nothing = await engram.imprint("delete", {}, merge_key="k")
    assert nothing.error is None
    assert (await engram.imprint("upsert", {"content": 1})).error  # needs merge_key
    assert (await engram.imprint("explode", {"content": 1})).error


async def test_imprint_id_makes_a_replay_a_noop(engram: Engram) -> None:
    r1 = await engram.imprint("append", {"content": "once"}, imprint_id="evt_1")
    r2 = await engram.imprint("append", {"content": "once"}, imprint_id="evt_1")
    assert r2.id == r1.id
    assert len(await entries(engram)) == 1


async def test_compensate_restores_every_prior_state_newest_first(engram: Engram) -> None:
    await engram.imprint("add", {"id": "keep", "content": {"v": 0}})
    await engram.imprint("upsert", {"content": {"v": "base"}}, merge_key="m")
    before = await entries(engram)
    t = "trc_saga"
    await engram.imprint("add", {"id": "new", "content": 1}, trace_id=t)
    await engram.imprint("upsert", {"content": {"v": 1}}, merge_key="m", trace_id=t)
    await engram.imprint("merge", {"content": {"w": 2}}, merge_key="m", trace_id=t)
    await engram.imprint("delete", {"id": "keep"}, trace_id=t)
    await engram.imprint("append", {"content": "other trace"}, trace_id="trc_other")
    assert await engram.journaled_traces() == ["trc_other", t]  # type: ignore[attr-defined]
    assert (await engram.compensate(t)).restored == 4
    after = [e for e in await entries(engram) if e["content"] != "other trace"]
    assert sorted(after, key=lambda e: e["id"]) == sorted(before, key=lambda e: e["id"])
    assert (await engram.compensate(t)).restored == 0  # exactly once
    await engram.commit("trc_other")
    assert (await engram.compensate("trc_other")).restored == 0
    assert len(await entries(engram)) == 3  # the committed write stays


async def test_sqlite_journal_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "durable.db")
    async with SqliteEngram(path) as first:
        await first.imprint("add", {"id": "base", "content": "v0"})
        await first.imprint("upsert", {"id": "base2", "content": "k0"}, merge_key="k")
        await first.imprint("add", {"id": "x", "content": "written by the trace"}, trace_id="trc_r")
        await first.imprint("upsert", {"content": "k1"}, merge_key="k", trace_id="trc_r")
        await first.imprint("delete", {"id": "base"}, trace_id="trc_r")
    async with SqliteEngram(path) as second:  # a new process, say
        assert await second.journaled_traces() == ["trc_r"]
        assert (await second.compensate("trc_r")).restored == 3
        assert (await second.compensate("trc_r")).restored == 0
        got = {e["id"]: e["content"] for e in await second.entries()}
    assert got == {"base": "v0", "base2": "k0"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sql_journals_and_imprint_ids_are_pruned_by_age(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    e: SqliteEngram | PostgresEngram = (
        SqliteEngram(str(tmp_path / "p.db"), journal_ttl_s=0.0)
        if backend == "sqlite"
        else PostgresEngram(request.getfixturevalue("postgres_dsn"), journal_ttl_s=0.0)
    )
    async with e:
        await e.imprint("append", {"content": 1}, trace_id="trc_a", imprint_id="imp_a")
        e._last_prune = 0.0  # force the next write to prune
        await e.imprint("append", {"content": 2}, trace_id="trc_b")
        assert "trc_a" not in await e.journaled_traces()
        again = await e.imprint("append", {"content": 1}, imprint_id="imp_a")  # outside the window
        assert len(await e.recall({"text": "1"})) == 2 and again.id is not None


def test_model_helpers() -> None:
    assert deep_merge({"a": {"b": 1}, "l": [1, 2]}, {"a": {"c": 2}, "l": [2, 3], "s": 1}) == {
        "a": {"b": 1, "c": 2}, "l": [1, 2, 3], "s": 1,
    }  # fmt: skip
    stored = {"id": "e", "content": "abcd", "tags": ["t"], "updated_at": "2026-01-02T00:00:00.000000Z"}
    assert score_entry(stored, {"text": "AB"}, None) == 0.5
    assert score_entry(stored, {"text": "zz"}, None) is None
    assert score_entry(stored, {}, {"since": "2026-01-03"}) is None
    assert score_entry(stored, {}, {"until": "2026-01-03", "tags": ["t"]}) == 1.0
    assert Hit.from_wire({"id": "e", "entry": stored, "score": 0.5}) == Hit("e", stored, 0.5)
    assert Hit.from_wire("junk") is None
    receipt = ImprintReceipt("eng", "add", "e", 1, 0.5)
    assert ImprintReceipt.from_payload(receipt.to_payload()) == receipt
    assert receipt.to_payload() == {"engram_id": "eng", "op": "add", "id": "e", "version": 1, "took_ms": 0.5}


async def test_the_first_settlement_asked_for_a_trace_wins() -> None:
    from cosmonapse.engram import EngramHost

    host = EngramHost(lambda trace: False)
    e = InMemoryEngram()
    host.add(e)
    await e.imprint("add", {"id": "x", "content": 1}, trace_id="trc_t")
    assert host.decide("trc_t", True) is True
    assert host.decide("trc_t", False) is True  # a later FINAL or plain STOP does not overturn it
    await host.commit("trc_t")  # skipped: the rollback was asked first
    assert await host.settle("trc_t", host.decide("trc_t", False)) == 1
    assert await e.entries() == []
    assert host.decide("trc_u", False) is False and host.decide("trc_u", True) is False
