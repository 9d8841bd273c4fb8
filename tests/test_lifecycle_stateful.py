"""A hypothesis state machine over the Dendrite/Pathway life cycle, on asyncio and trio.

Rules dispatch TASKs to a gated Neuron, then reply, fail, close early, or wait
with a short timeout, in any order; the machine ends by leaving the
``async with`` blocks with work still in flight.  Invariants: at most one
terminal Signal per trace; every wait resolves or times out; no task is left
running after exit (``memory_cluster`` checks that) and every still-running
Neuron saw cancellation.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from cosmonapse import NeuronContext, Pathway, PathwayClosedError, PathwayTimeout, Signal, SignalType
from cosmonapse.testing.harness import memory_cluster

T = SignalType


class LifecycleMachine(RuleBasedStateMachine):
    backend = "asyncio"
    traces = Bundle("traces")

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.gates: dict[str, tuple[anyio.Event, list[str]]] = {}
        self.cancelled: list[str] = []
        self.terminals: dict[str, int] = {}
        self.pathways: dict[str, Pathway] = {}
        self.in_flight: set[str] = set()
        self._cluster_cm = self.portal.wrap_async_context_manager(
            memory_cluster(workers={"gated": self._gated}, orchestrator_kw={"heartbeat_s": 0})
        )
        self.cluster = self._cluster_cm.__enter__()
        # handlers are registered on the event loop's thread, like every Dendrite call
        self.portal.call(self.cluster.orchestrator.on_final, self._count_terminal)
        self.portal.call(self.cluster.orchestrator.on_error_signal, self._count_terminal)

    async def _gated(self, input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        gate, outcome = self.gates[input["key"]]
        try:
            await gate.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(input["key"])
            raise
        if outcome and outcome[0] == "error":
            raise RuntimeError("asked to fail")
        return {"ok": input["key"]}

    def _count_terminal(self, sig: Signal) -> None:
        self.terminals[sig.trace_id] = self.terminals.get(sig.trace_id, 0) + 1

    def _new_gate(self, key: str) -> None:
        async def make() -> None:
            self.gates[key] = (anyio.Event(), [])

        self.portal.call(make)

    def _release(self, key: str, outcome: str) -> None:
        async def release() -> None:
            gate, box = self.gates[key]
            box.append(outcome)
            gate.set()

        self.portal.call(release)

    @rule(target=traces, finalize=st.booleans())
    def dispatch(self, finalize: bool) -> str:
        key = f"k{len(self.gates)}"
        self._new_gate(key)
        pw = self.portal.call(
            lambda: self.cluster.orchestrator.dispatch(neuron="gated", input={"key": key}, finalize=finalize)
        )
        self.pathways[key] = pw
        self.in_flight.add(key)
        return key

    def _wait(self, key: str, timeout_s: float) -> Signal | str:
        pw = self.pathways[key]

        async def wait() -> Signal | str:
            with anyio.fail_after(10):  # the machine's own bound: a wait must never hang
                try:
                    return await pw.wait(timeout_s)
                except PathwayTimeout:
                    return "timeout"
                except PathwayClosedError:
                    return "closed"

        return self.portal.call(wait)

    @rule(key=consumes(traces))
    def reply(self, key: str) -> None:
        self._release(key, "reply")
        self.in_flight.discard(key)
        got = self._wait(key, 5)
        if self.pathways[key].closed and got == "closed":
            return  # closed earlier by the `close` rule
        assert isinstance(got, Signal) and got.type is T.AGENT_OUTPUT
        self.portal.call(self.pathways[key].close)

    @rule(key=consumes(traces))
    def error(self, key: str) -> None:
        was_closed = self.pathways[key].closed
        self._release(key, "error")
        self.in_flight.discard(key)
        got = self._wait(key, 5)
        if was_closed:
            assert got == "closed"
        else:
            assert isinstance(got, Signal) and got.type is T.ERROR
            assert self.pathways[key].closed  # ERROR auto-closes

    @rule(key=traces)
    def close(self, key: str) -> None:
        self.portal.call(self.pathways[key].close)
        assert self.pathways[key].closed

    @rule(key=traces)
    def short_wait(self, key: str) -> None:
        got = self._wait(key, 0.005)
        assert got in ("timeout", "closed") or isinstance(got, Signal)

    @invariant()
    def at_most_one_terminal_per_trace(self) -> None:
        assert all(n <= 1 for n in self.terminals.values()), self.terminals

    def teardown(self) -> None:
        try:
            self._cluster_cm.__exit__(None, None, None)  # exits with Neurons in flight
            for key in self.in_flight:
                assert key in self.cancelled, f"Neuron for {key} was not cancelled on exit"
            assert self.cluster.orchestrator.open_pathways() == []
        finally:
            self._portal_cm.__exit__(None, None, None)


SETTINGS = settings(
    max_examples=12, stateful_step_count=10, deadline=None, suppress_health_check=list(HealthCheck)
)


class AsyncioLifecycle(LifecycleMachine):
    backend = "asyncio"


class TrioLifecycle(LifecycleMachine):
    backend = "trio"


TestLifecycleAsyncio = AsyncioLifecycle.TestCase
TestLifecycleAsyncio.settings = SETTINGS
TestLifecycleTrio = TrioLifecycle.TestCase
TestLifecycleTrio.settings = SETTINGS

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
