"""A hypothesis state machine over resilience: dispatch, reply, errors, STOP (with and without
rollback), retry, late TASKs for stopped traces and worker crashes, on asyncio and trio.

The gated Neuron writes to an Engram (journaled under its trace): an entry of
its own, and the one entry every trace overwrites; then it waits for the
machine to release it with a reply, a recoverable error, or never.
Invariants checked:

* every call sees exactly one outcome (a reply Signal or one exception), and
  no trace carries more than one terminal Signal;
* no Engram write of a trace whose first settlement was a rollback survives;
* the shared entry holds the last write of a trace that was not rolled back
  (or nothing): rollbacks never undo other traces' writes, nor bring back a
  rolled-back one, whatever order they come in (conflict-aware compensation);
* a trace this worker instance saw STOPped never starts running on it again;
* no task outlives its Dendrite (nothing is left running at the end).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cosmonapse import (
    Axon,
    Dendrite,
    Directed,
    Engram,
    ImprintReceipt,
    InMemoryEngram,
    MemorySynapse,
    NeuronContext,
    RetryStrategy,
    Signal,
    SignalType,
    SqliteEngram,
)
from cosmonapse.engram import CompensationReport
from cosmonapse.testing.harness import running_task_names

T = SignalType
CALL_TIMEOUT_S = 0.4
ATTEMPT_TIMEOUT_S = 0.25


class World:
    """Everything that lives on the event loop; the machine drives it through a portal."""

    def __init__(self, engram: Engram) -> None:
        self.engram = engram
        self.gates: dict[str, tuple[anyio.Event, list[str]]] = {}
        self.outcomes: dict[str, list[Any]] = {}
        self.call_done: dict[str, anyio.Event] = {}
        self.traces_of: dict[str, list[str]] = {}  # key -> traces its Neuron ran on, in order
        self.terminals: Counter[str] = Counter()
        self.stops_sent: Counter[str] = Counter()
        self.first_stop_rollback: dict[str, bool] = {}  # in the order STOPs were published
        self.settled: list[tuple[str, str]] = []  # (trace, "commit" | "compensate"), in engram order
        self.shared_writes: list[str] = []  # traces that wrote the shared entry, in engram order
        self.settle_changed = anyio.Event()
        self.violations: list[str] = []
        self.worker_instance = 0
        self.stopped_here: dict[int, set[str]] = {}  # worker instance -> traces it saw STOPped
        self.baseline: set[int] = set(running_task_names())

    # -- the Neuron -------------------------------------------------------------------
    async def gated(self, input: dict[str, Any], ctx: NeuronContext) -> Any:
        key, trace = input["key"], ctx.trace_id
        if trace in self.stopped_here.get(self.worker_instance, set()):
            self.violations.append(f"{key}: trace {trace} ran again after this worker saw it STOPped")
        self.traces_of.setdefault(key, []).append(trace)
        await ctx.imprint(
            engram_id="mem", op="append", entry={"content": key, "tags": [trace]}, await_ack=True
        )
        await ctx.imprint(
            engram_id="mem", op="upsert", entry={"content": trace}, merge_key="shared", await_ack=True
        )
        gate, outcome = self.gates[key]
        await gate.wait()
        if outcome[0] == "error":
            return {"__error__": True, "code": "BUSY", "message": "again", "recoverable": True}
        return {"key": key}

    # -- hosting ----------------------------------------------------------------------
    async def host(self, ready: anyio.Event, shutdown: anyio.Event) -> None:
        """The bus, the orchestrator and the Engram keeper: entered and left by this task."""
        async with AsyncExitStack() as stack:
            self.bus = await stack.enter_async_context(MemorySynapse())
            self.orch = Dendrite(synapse=self.bus, namespace="st", dendrite_id="orch", heartbeat_s=0)
            self.orch.on_final(self._terminal)
            self.orch.on_error_signal(self._terminal)
            keeper = Dendrite(
                synapse=self.bus, namespace="st", role="worker", dendrite_id="keeper", heartbeat_s=0
            )
            keeper.attach_engram(self.engram)
            self._watch_engram()
            await stack.enter_async_context(self.orch)
            await stack.enter_async_context(keeper)

            async def count_stop(sig: Signal) -> None:
                # Every STOP on the bus (emit_stop, stop_trace, a retry or a call giving up), in
                # bus order: the order the keeper's STOP subscription sees them in.
                self.stops_sent[sig.trace_id] += 1
                self.first_stop_rollback.setdefault(sig.trace_id, bool(sig.payload.get("rollback")))

            self.stop_feed = await self.bus.subscribe("cosmonapse.st.STOP", count_stop)
            ready.set()
            await shutdown.wait()

    async def worker_host(self, instance: int, ready: anyio.Event, crash: anyio.Event) -> None:
        worker = Dendrite(
            synapse=self.bus, namespace="st", role="worker", dendrite_id=f"w{instance}", heartbeat_s=0
        )
        worker.attach_axon(Axon(neuron_id="gated", neuron_fn=self.gated))
        seen = self.stopped_here.setdefault(instance, set())
        worker.on_stop(lambda sig: seen.add(sig.trace_id))
        async with worker:
            self.worker_instance = instance
            ready.set()
            await crash.wait()

    def _terminal(self, sig: Signal) -> None:
        self.terminals[sig.trace_id] += 1

    def _watch_engram(self) -> None:
        commit, compensate, imprint = self.engram.commit, self.engram.compensate, self.engram.imprint

        async def watched_imprint(op: str, entry: dict[str, Any], **kw: Any) -> ImprintReceipt:
            receipt = await imprint(op, entry, **kw)  # the host calls this under the engram's lock
            if kw.get("merge_key") == "shared" and receipt.error is None:
                self.shared_writes.append(kw["trace_id"])
            return receipt

        async def watched_commit(trace_id: str) -> None:
            await commit(trace_id)
            self._settle(trace_id, "commit")

        async def watched_compensate(trace_id: str) -> CompensationReport:
            report = await compensate(trace_id)
            self._settle(trace_id, "compensate")
            return report

        self.engram.commit = watched_commit  # type: ignore[method-assign]
        self.engram.compensate = watched_compensate  # type: ignore[method-assign]
        self.engram.imprint = watched_imprint  # type: ignore[method-assign]

    def _settle(self, trace_id: str, how: str) -> None:
        self.settled.append((trace_id, how))
        self.settle_changed.set()
        self.settle_changed = anyio.Event()

    # -- calls -------------------------------------------------------------------------
    async def new_gate(self, key: str) -> None:
        self.gates[key] = (anyio.Event(), [])
        self.outcomes[key] = []
        self.call_done[key] = anyio.Event()

    async def call(self, key: str, retry: bool, trace_id: str) -> None:
        try:
            if retry:
                strategy = RetryStrategy(max_attempts=2, timeout_s=ATTEMPT_TIMEOUT_S, rollback_on_retry=True)
                outcome: Any = await self.orch.dispatch_and_wait(
                    neuron="gated", input={"key": key}, retry=strategy
                )
            else:
                outcome = await self.orch.dispatch_and_wait(
                    neuron="gated", input={"key": key}, timeout_s=CALL_TIMEOUT_S, trace_id=trace_id
                )
        except Exception as exc:  # the one outcome may be an exception
            outcome = exc
        self.outcomes[key].append(outcome)
        self.call_done[key].set()

    async def release(self, key: str, how: str) -> None:
        gate, outcome = self.gates[key]
        if not gate.is_set():
            outcome.append(how)
            gate.set()

    async def late_task(self, trace: str) -> None:
        """A TASK for a stopped trace, as a peer that missed the STOP would send it."""
        await self.new_gate(f"late:{trace}")
        await self.release(f"late:{trace}", "reply")
        self.call_done[f"late:{trace}"].set()  # no caller waits for it
        task = Signal(
            type=T.TASK,
            trace_id=trace,
            directed=Directed("gated"),
            payload={"input": {"key": f"late:{trace}"}},
        )
        await self.bus.publish("cosmonapse.st.TASK", task)

    # -- the end -----------------------------------------------------------------------
    async def quiesce(self) -> None:
        """Release everything, let every call finish and every STOP settle at the keeper."""
        for key in list(self.gates):
            await self.release(key, "reply")
        with anyio.fail_after(15):
            for done in self.call_done.values():
                await done.wait()
            while self.stop_feed.pending:  # every STOP published so far is counted
                await anyio.lowlevel.checkpoint()
            while True:
                settled = Counter(trace for trace, _ in self.settled)
                if all(settled[t] >= n for t, n in self.stops_sent.items()):
                    break
                await self.settle_changed.wait()

    async def leaked_tasks(self) -> list[str]:
        me = anyio.get_current_task().id
        return [name for tid, name in running_task_names().items() if tid not in self.baseline and tid != me]

    async def surviving_traces(self) -> set[str]:
        entries = await self.engram.entries()  # type: ignore[attr-defined]
        return {tag for e in entries for tag in e["tags"]}

    async def shared_owner(self) -> str | None:
        hits = await self.engram.recall({"merge_key": "shared"})
        return hits[0].entry["content"] if hits else None


class ResilienceMachine(RuleBasedStateMachine):
    backend = "asyncio"
    engram_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        engram: Engram = (
            InMemoryEngram("mem")
            if self.engram_kind == "memory"
            else SqliteEngram(str(Path(self._tmp.name) / "e.db"), "mem")
        )
        self.world: World = self.portal.call(self._make_world, engram)
        self.ready, self.shutdown = self.portal.call(self._events)
        self._host = self.portal.start_task_soon(self.world.host, self.ready, self.shutdown)
        self.portal.call(self.ready.wait)
        self.crash: anyio.Event | None = None
        self._worker: Any = None
        self._start_worker()
        self.keys: list[str] = []
        self.n = 0

    @staticmethod
    async def _make_world(engram: Engram) -> World:
        return World(engram)

    @staticmethod
    async def _events() -> tuple[anyio.Event, anyio.Event]:
        return anyio.Event(), anyio.Event()

    def _start_worker(self) -> None:
        ready, self.crash = self.portal.call(self._events)
        self.world.worker_instance += 1
        self._worker = self.portal.start_task_soon(
            self.world.worker_host, self.world.worker_instance, ready, self.crash
        )
        self.portal.call(ready.wait)

    def _stop_worker(self) -> None:
        assert self.crash is not None
        self.portal.call(self.crash.set)
        self._worker.result(timeout=15)

    # -- rules -------------------------------------------------------------------------
    @rule(retry=st.booleans())
    def dispatch(self, retry: bool) -> None:
        self.n += 1
        key = f"k{self.n}"
        self.portal.call(self.world.new_gate, key)
        trace = f"trc_{self.n:026d}"
        self.portal.start_task_soon(self.world.call, key, retry, trace)
        self.keys.append(key)

    @precondition(lambda self: self.keys)
    @rule(data=st.data(), how=st.sampled_from(["reply", "error"]))
    def release(self, data: st.DataObject, how: str) -> None:
        key = data.draw(st.sampled_from(self.keys))
        self.portal.call(self.world.release, key, how)

    @precondition(lambda self: self.keys)
    @rule(data=st.data(), rollback=st.booleans())
    def stop(self, data: st.DataObject, rollback: bool) -> None:
        key = data.draw(st.sampled_from(self.keys))
        traces = self.world.traces_of.get(key)
        if traces:
            self.portal.call(
                lambda: self.world.orch.stop_trace(traces[-1], rollback=rollback, reason="machine")
            )

    @rule(pick=st.integers(0, 1000))
    def late_task_for_a_stopped_trace(self, pick: int) -> None:
        # What was stopped depends on timing, so draw an index, not from the (timing-dependent) set:
        # Hypothesis needs the same draws to generate the same steps.
        stopped = sorted(self.world.stopped_here.get(self.world.worker_instance, ()))
        if stopped:
            self.portal.call(self.world.late_task, stopped[pick % len(stopped)])

    @rule()
    def crash_worker(self) -> None:
        self._stop_worker()
        self._start_worker()

    # -- invariants --------------------------------------------------------------------
    @invariant()
    def at_most_one_outcome_and_terminal(self) -> None:
        assert all(len(o) <= 1 for o in self.world.outcomes.values()), self.world.outcomes
        assert all(n <= 1 for n in self.world.terminals.values()), self.world.terminals
        assert not self.world.violations, self.world.violations

    def teardown(self) -> None:
        try:
            self.portal.call(self.world.quiesce)
            world = self.world
            for key in self.keys:
                assert len(world.outcomes[key]) == 1, (key, world.outcomes[key])
            # The first STOP published for a trace decides its fate at the keeper (one STOP feed).
            rolled_back = {t for t, rollback in world.first_stop_rollback.items() if rollback}
            survivors = self.portal.call(world.surviving_traces)
            assert not rolled_back & survivors, f"rolled-back writes survived: {rolled_back & survivors}"
            kept = [t for t in world.shared_writes if t not in rolled_back]
            owner = self.portal.call(world.shared_owner)
            assert owner == (kept[-1] if kept else None), (owner, world.shared_writes, rolled_back)
            assert not world.violations, world.violations
            self._stop_worker()
            self.portal.call(self.shutdown.set)
            self._host.result(timeout=15)
            leaked = self.portal.call(world.leaked_tasks)
            assert not leaked, f"tasks outlived their Dendrites: {leaked}"
            self.portal.call(world.engram.close)
        finally:
            self.portal.call(self._abort)  # after a failure: let every host task end
            self._portal_cm.__exit__(None, None, None)
            self._tmp.cleanup()

    async def _abort(self) -> None:
        for key in list(self.world.gates):
            await self.world.release(key, "reply")
        if self.crash is not None:
            self.crash.set()
        self.shutdown.set()


SETTINGS = settings(
    max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)
)


class AsyncioMemory(ResilienceMachine):
    backend = "asyncio"
    engram_kind = "memory"


class TrioSqlite(ResilienceMachine):
    backend = "trio"
    engram_kind = "sqlite"


TestResilienceAsyncioMemory = AsyncioMemory.TestCase
TestResilienceAsyncioMemory.settings = SETTINGS
TestResilienceTrioSqlite = TrioSqlite.TestCase
TestResilienceTrioSqlite.settings = SETTINGS

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
