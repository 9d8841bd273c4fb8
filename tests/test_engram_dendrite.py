"""Engrams over the bus (§14): RECALL/IMPRINT flow, deadlines, and saga rollback via STOP and retry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from cosmonapse import (
    Dendrite,
    DendriteProtocolError,
    Directed,
    Engram,
    EngramCancelled,
    EngramNotBound,
    EngramTimeout,
    InMemoryEngram,
    MemorySynapse,
    NeuronContext,
    RetryStrategy,
    Signal,
    SignalType,
    SqliteEngram,
)
from cosmonapse.engram import CompensationReport, PostgresEngram
from cosmonapse.testing.harness import Cluster, SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


@asynccontextmanager
async def keeper_of(c: Cluster, *engrams: Engram, name: str = "keeper") -> AsyncIterator[Dendrite]:
    """A worker Dendrite hosting *engrams* on the cluster's bus."""
    keeper = Dendrite(synapse=c.synapse, namespace="test", role="worker", dendrite_id=name)
    for e in engrams:
        keeper.attach_engram(e)
    async with keeper:
        yield keeper


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def engram(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engram]:
    if request.param == "postgres":
        e: Engram = PostgresEngram(request.getfixturevalue("postgres_dsn"), "notes")
    elif request.param == "sqlite":
        e = SqliteEngram(str(tmp_path / "n.db"), "notes")
    else:
        e = InMemoryEngram("notes")
    async with e:
        yield e


async def test_recall_and_imprint_round_trip(engram: Engram) -> None:
    async with memory_cluster() as c:
        registers = SignalRecorder()
        c.orchestrator.on_register_signal(registers)
        async with keeper_of(c, engram):
            await registers.wait_for(lambda s: any(x.directed and x.directed.id == "notes" for x in s))
            receipt = await c.orchestrator.imprint(
                engram_id="notes", op="add", entry={"id": "n1", "content": "the sky is blue"}, await_ack=True
            )
            assert receipt is not None and (receipt.id, receipt.engram_id, receipt.error) == (
                "n1",
                "notes",
                None,
            )
            result = await c.orchestrator.recall(engram_kind=engram.engram_kind, query={"text": "sky"})
            assert result.engram_ids == ["notes"] and [h.id for h in result.hits] == ["n1"]
            assert result.entries[0]["content"] == "the sky is blue" and result.took_ms >= 0
            fire_and_forget = await c.orchestrator.imprint(
                engram_id="notes", op="append", entry={"content": 2}
            )
            assert fire_and_forget is None
    reg = next(s for s in registers.signals if s.directed and s.directed.id == "notes")
    assert reg.payload["role"] == "engram" and reg.payload["engram"] is True
    assert reg.directed is not None and reg.directed.type == engram.engram_kind


async def test_neuron_uses_its_context_on_its_own_trace() -> None:
    engram = InMemoryEngram("mem")

    async def writer(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        receipt = await ctx.imprint(
            engram_id="mem", op="append", entry={"content": input["text"]}, await_ack=True
        )
        found = await ctx.recall(engram_id="mem", query={"text": input["text"]})
        return {"id": receipt.id, "found": [h.id for h in found.hits]}

    async with memory_cluster(workers={"writer": writer}) as c:
        seen = SignalRecorder()
        c.orchestrator.on_imprint_signal(seen)
        async with keeper_of(c, engram):
            reply = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"text": "hello"})
            await seen.wait_for(count=1)
    assert reply.payload["output"]["found"] == [reply.payload["output"]["id"]]
    imprint = seen.signals[0]
    assert imprint.trace_id == reply.trace_id and imprint.parent_id == reply.parent_id  # parent = the TASK


async def test_every_call_has_a_deadline() -> None:
    async with memory_cluster() as c:
        with pytest.raises(EngramTimeout, match="nobody"):
            await c.orchestrator.recall(engram_id="nobody", query={}, deadline_ms=50)
        with pytest.raises(EngramTimeout):
            await c.orchestrator.imprint(
                engram_id="nobody", op="add", entry={}, await_ack=True, deadline_ms=50
            )
        c.orchestrator.engram_deadline_ms = 30
        with anyio.fail_after(2), pytest.raises(EngramTimeout):
            await c.orchestrator.recall(engram_kind="none", query={})
        with pytest.raises(EngramNotBound):
            await c.orchestrator.recall(query={})
        with pytest.raises(ValueError):
            await c.orchestrator.imprint(engram_id="x", op="upsert", entry={})


async def test_merge_mode_collects_every_engram_until_the_deadline() -> None:
    a, b = InMemoryEngram("a", "shared"), InMemoryEngram("b", "shared")
    await a.imprint("add", {"id": "short", "content": "cat"})
    await b.imprint("add", {"id": "long", "content": "cat and a long tail"})
    await b.imprint("add", {"id": "exact", "content": "cat!"})
    async with memory_cluster() as c, keeper_of(c, a, name="ka"), keeper_of(c, b, name="kb"):
        merged = await c.orchestrator.recall(engram_kind="shared", query={"text": "cat"}, recall_mode="merge",
                                             deadline_ms=200)  # fmt: skip
        first = await c.orchestrator.recall(engram_id="b", query={"text": "cat"})
    assert sorted(merged.engram_ids) == ["a", "b"]
    assert [h.id for h in merged.hits] == ["short", "exact", "long"]  # by score
    assert first.engram_ids == ["b"]


async def test_stop_with_rollback_undoes_a_neurons_writes_and_refuses_later_ones(engram: Engram) -> None:
    wrote = anyio.Event()

    async def writer(input: dict[str, Any], ctx: NeuronContext) -> Any:
        await ctx.imprint(engram_id="notes", op="add", entry={"id": "w1", "content": 1}, await_ack=True)
        await ctx.imprint(engram_id="notes", op="add", entry={"id": "w2", "content": 2}, await_ack=True)
        wrote.set()
        await anyio.sleep_forever()

    await engram.imprint("add", {"id": "before", "content": 0})
    async with memory_cluster(workers={"writer": writer}) as c, keeper_of(c, engram):
        pw = await c.orchestrator.dispatch(neuron="writer", input={})
        with anyio.fail_after(5):
            await wrote.wait()
        acks = await c.orchestrator.stop_trace(pw.trace_id, rollback=True, collect_acks=True, timeout_s=0.3)
        by_node = {a.payload["node"]: a.payload for a in acks}
        assert by_node["keeper"] == {"rolled_back": True, "cancelled": 0, "compensated": 2, "node": "keeper"}
        assert by_node["worker"]["cancelled"] == 1
        assert [e["id"] for e in await engram.entries()] == ["before"]  # type: ignore[attr-defined]
        # A late write for the stopped trace (some peer that missed the STOP) is refused.
        late = Signal(
            type=T.IMPRINT, trace_id=pw.trace_id, directed=Directed("notes"),
            payload={"op": "add", "entry": {"id": "late", "content": 3}},
        )  # fmt: skip
        answers = SignalRecorder()
        c.orchestrator.on_imprinted(answers)
        await c.synapse.publish("cosmonapse.test.IMPRINT", late)
        (answer,) = await answers.wait_for(count=1)
        assert answer.payload["error"].startswith("trace_stopped")
        assert [e["id"] for e in await engram.entries()] == ["before"]  # type: ignore[attr-defined]


class Watch:
    """Records an engram's commit/compensate calls and lets a test wait for one."""

    def __init__(self, engram: Engram) -> None:
        self.calls: list[tuple[str, str, int | None]] = []
        self.reports: dict[str, CompensationReport] = {}
        self._changed = anyio.Event()
        commit, compensate = engram.commit, engram.compensate

        async def watched_commit(trace_id: str) -> None:
            await commit(trace_id)
            self._note(("commit", trace_id, None))

        async def watched_compensate(trace_id: str) -> CompensationReport:
            report = await compensate(trace_id)
            self.reports[trace_id] = report
            self._note(("compensate", trace_id, report.restored))
            return report

        engram.commit = watched_commit  # type: ignore[method-assign]
        engram.compensate = watched_compensate  # type: ignore[method-assign]

    def _note(self, call: tuple[str, str, int | None]) -> None:
        self.calls.append(call)
        self._changed.set()
        self._changed = anyio.Event()

    async def compensated(self, trace_id: str) -> CompensationReport:
        """The report of *trace_id*'s compensation, once it ran."""
        with anyio.fail_after(5):
            while trace_id not in self.reports:
                await self._changed.wait()
        return self.reports[trace_id]

    async def wait_for(self, call: tuple[str, str, int | None], count: int = 1) -> None:
        with anyio.fail_after(5):
            while self.calls.count(call) < count:
                await self._changed.wait()


async def test_final_commits_and_error_keeps_the_journal(engram: Engram) -> None:
    async def writer(input: dict[str, Any], ctx: NeuronContext) -> Any:
        await ctx.imprint(
            engram_id="notes", op="add", entry={"id": input["id"], "content": 1}, await_ack=True
        )
        if input.get("fail"):
            return {"__error__": True, "code": "X", "message": "failed after writing"}
        return {"ok": True}

    watch = Watch(engram)
    async with memory_cluster(workers={"writer": writer}) as c, keeper_of(c, engram):
        done = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"id": "kept"}, scope="terminal")
        assert done.type is T.FINAL
        await watch.wait_for(("commit", done.trace_id, None))  # FINAL committed the trace
        await c.orchestrator.stop_trace(done.trace_id, rollback=True)
        await watch.wait_for(("commit", done.trace_id, None), count=2)  # FINAL came first: it stays
        failed = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"id": "undone", "fail": True})
        assert failed.type is T.ERROR  # ERROR keeps the journal ...
        await c.orchestrator.stop_trace(failed.trace_id, rollback=True)
        await watch.wait_for(("compensate", failed.trace_id, 1))  # ... so a later rollback undoes it
        assert [e["id"] for e in await engram.entries()] == ["kept"]  # type: ignore[attr-defined]
        assert await engram.journaled_traces() == []  # type: ignore[attr-defined]


async def upsert_k(input: dict[str, Any], ctx: NeuronContext) -> Any:
    """Writes ``input["value"]`` to the entry with merge key ``k``; fails (keeping its journal) if asked."""
    await ctx.imprint(
        engram_id="notes", op="upsert", entry={"content": input["value"]}, merge_key="k", await_ack=True
    )
    if input.get("fail"):
        return {"__error__": True, "code": "HALF", "message": "failed after writing"}
    return {"wrote": input["value"]}


async def current_k(c: Cluster) -> Any:
    found = await c.orchestrator.recall(engram_id="notes", query={"merge_key": "k"})
    return [h.entry["content"] for h in found.hits]


async def test_rolling_back_a_never_loses_bs_committed_write(
    engram: Engram, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9 item 3, first half: v0, A writes A, B writes B and commits; rolling back A keeps B."""
    await engram.imprint("upsert", {"content": "v0"}, merge_key="k")
    watch = Watch(engram)
    async with memory_cluster(workers={"writer": upsert_k}) as c, keeper_of(c, engram):
        a = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"value": "A", "fail": True})
        b = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"value": "B"}, scope="terminal")
        assert (a.type, b.type) == (T.ERROR, T.FINAL)
        await watch.wait_for(("commit", b.trace_id, None))  # B's FINAL committed it
        with caplog.at_level(logging.WARNING, logger="cosmonapse.engram"):
            await c.orchestrator.stop_trace(a.trace_id, rollback=True)
            report = await watch.compensated(a.trace_id)
        assert await current_k(c) == ["B"]
        assert report.restored == 0
        (entry_id,) = report.conflicted
        assert any(entry_id in r.getMessage() and a.trace_id in r.getMessage() for r in caplog.records)
        # Rolling back B now changes nothing: its FINAL came first.
        await c.orchestrator.stop_trace(b.trace_id, rollback=True)
        await watch.wait_for(("commit", b.trace_id, None), count=2)
        assert await current_k(c) == ["B"]


@pytest.mark.parametrize("first", ["a", "b"])
async def test_rolling_back_a_then_b_never_brings_a_back(engram: Engram, first: str) -> None:
    """Issue 9 item 3, second half: both writes rolled back, in either order, leave v0 (never A)."""
    await engram.imprint("upsert", {"content": "v0"}, merge_key="k")
    watch = Watch(engram)
    async with memory_cluster(workers={"writer": upsert_k}) as c, keeper_of(c, engram):
        a = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"value": "A", "fail": True})
        b = await c.orchestrator.dispatch_and_wait(neuron="writer", input={"value": "B", "fail": True})
        order = (a, b) if first == "a" else (b, a)
        for sig in order:
            await c.orchestrator.stop_trace(sig.trace_id, rollback=True)
            await watch.compensated(sig.trace_id)
        assert await current_k(c) == ["v0"]
        reports = [watch.reports[sig.trace_id] for sig in order]
        if first == "a":
            assert [(r.restored, len(r.conflicts)) for r in reports] == [(0, 1), (1, 0)]
        else:
            assert [(r.restored, len(r.conflicts)) for r in reports] == [(1, 0), (1, 0)]


async def test_retry_rolls_back_each_abandoned_attempt(engram: Engram) -> None:
    attempts: list[int] = []

    async def flaky(input: dict[str, Any], ctx: NeuronContext) -> Any:
        attempt = ctx.task.meta["attempt"]
        attempts.append(attempt)
        await ctx.imprint(
            engram_id="notes", op="append", entry={"content": f"attempt {attempt}"}, await_ack=True
        )
        if attempt < 2:
            return {"__error__": True, "code": "BUSY", "message": "try again", "recoverable": True}
        return {"attempt": attempt}

    async with memory_cluster(workers={"flaky": flaky}) as c, keeper_of(c, engram):
        stopped = SignalRecorder()
        c.orchestrator.on_stopped(stopped)
        reply = await c.orchestrator.run_with_retry(
            neuron="flaky", input={}, retry=RetryStrategy(rollback_on_retry=True, timeout_s=5)
        )
        await stopped.wait_for(lambda s: sum(x.payload["compensated"] for x in s) == 2)
        contents = [e["content"] for e in await engram.entries()]  # type: ignore[attr-defined]
    assert reply.payload["output"] == {"attempt": 2} and attempts == [0, 1, 2]
    assert contents == ["attempt 2"]


async def test_rollback_after_a_restart_uses_the_durable_journal(tmp_path: Path) -> None:
    path = str(tmp_path / "durable.db")

    async def writer(input: dict[str, Any], ctx: NeuronContext) -> Any:
        await ctx.imprint(
            engram_id="notes", op="upsert", entry={"content": "changed"}, merge_key="k", await_ack=True
        )
        await ctx.imprint(engram_id="notes", op="add", entry={"id": "new", "content": 1}, await_ack=True)
        return {"__error__": True, "code": "HALF", "message": "crashed half way"}

    async with SqliteEngram(path, "notes") as first:
        await first.imprint("upsert", {"id": "orig", "content": "original"}, merge_key="k")
        async with memory_cluster(workers={"writer": writer}) as c, keeper_of(c, first):
            failed = await c.orchestrator.dispatch_and_wait(neuron="writer", input={})
    assert failed.type is T.ERROR
    # "Restart": a new bus, new Dendrites, a new backend instance on the same file.
    async with SqliteEngram(path, "notes") as second, memory_cluster() as c, keeper_of(c, second):
        acks = await c.orchestrator.stop_trace(
            failed.trace_id, rollback=True, collect_acks=True, timeout_s=0.3
        )
        assert [a.payload["compensated"] for a in acks] == [2]
        assert [(e["id"], e["content"]) for e in await second.entries()] == [("orig", "original")]


async def test_pending_calls_end_when_the_trace_stops_or_ends_or_the_dendrite_stops() -> None:
    async with memory_cluster() as c:
        trace = "trc_" + "2" * 26
        result: list[BaseException] = []

        async def call(who: Dendrite, trace_id: str | None = None) -> None:
            try:
                await who.recall(engram_id="nobody", query={}, deadline_ms=10_000, trace_id=trace_id)
            except EngramCancelled as exc:
                result.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, c.orchestrator, trace)
            await anyio.wait_all_tasks_blocked()
            await c.orchestrator.emit_stop(trace_id=trace)
        assert len(result) == 1
        other = "trc_" + "3" * 26
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, c.orchestrator, other)
            await anyio.wait_all_tasks_blocked()
            await c.orchestrator.emit_final(trace_id=other, parent_id=None, result={})
        assert len(result) == 2

    async with MemorySynapse() as bus:
        lone = Dendrite(synapse=bus, namespace="solo")
        running, stop = anyio.Event(), anyio.Event()

        async def host() -> None:
            async with lone:  # entered and left by this task
                running.set()
                await stop.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(host)
            await running.wait()
            tg.start_soon(call, lone)
            await anyio.wait_all_tasks_blocked()
            stop.set()
        assert len(result) == 3


async def test_a_redelivered_imprint_writes_once() -> None:
    engram = InMemoryEngram("mem")
    async with memory_cluster() as c, keeper_of(c, engram):
        answers = SignalRecorder()
        c.orchestrator.on_imprinted(answers)
        sig = Signal(
            type=T.IMPRINT, directed=Directed("mem"), payload={"op": "append", "entry": {"content": "x"}}
        )
        await c.synapse.publish("cosmonapse.test.IMPRINT", sig)
        await c.synapse.publish("cosmonapse.test.IMPRINT", sig)
        first, second = await answers.wait_for(count=2)
    assert first.payload["id"] == second.payload["id"]
    assert len(await engram.entries()) == 1


async def test_attach_and_detach_guards() -> None:
    async with memory_cluster() as c:
        e = InMemoryEngram("dup")
        c.worker.attach_engram(e)
        with pytest.raises(DendriteProtocolError):
            c.worker.attach_engram(InMemoryEngram("dup"))
        assert c.worker.engrams == {"dup": e}
        await c.worker.detach_engram("dup")
        with pytest.raises(DendriteProtocolError):
            await c.worker.detach_engram("dup")
