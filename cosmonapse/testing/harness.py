"""Helpers to run Dendrites under test: an in-memory cluster, Signal recorders, leak checks.

    async with memory_cluster(workers={"echo": echo}) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="echo", input={"x": 1})

Everything here is backend-neutral (anyio), so the same test runs on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import attrs

from ..axon import Axon, NeuronFn
from ..dendrite import Dendrite
from ..signal import Signal, SignalType
from ..synapse.base import Synapse
from ..synapse.memory import MemorySynapse

__all__ = [
    "Cluster",
    "SignalRecorder",
    "assert_no_leaked_tasks",
    "memory_cluster",
    "record_namespace",
    "running_task_names",
]


def _test_runner_task(name: str) -> bool:
    """The anyio pytest plugin runs each fixture step in a task of its own: never a test's leak."""
    return "TestRunner." in name


def running_task_names() -> dict[int, str]:
    """Id → name of every task running in this event loop (its coroutine when it has no name)."""
    out = {}
    for t in anyio.get_running_tasks():
        name = t.name or "?"
        if name.startswith("Task-"):  # asyncio's default name says nothing: show what it runs
            name = f"{name} ({getattr(t.coro, '__qualname__', '?')})"
        out[t.id] = name
    return out


@asynccontextmanager
async def assert_no_leaked_tasks(*, ignore: Callable[[str], bool] | None = None) -> AsyncIterator[None]:
    """Fail if a task started inside the block is still running after it (``ignore(name)``: not counted)."""
    before = set(running_task_names())
    yield
    after = running_task_names()
    after.pop(anyio.get_current_task().id, None)  # a fixture may end in another task than it began
    leaked = {
        tid: name
        for tid, name in after.items()
        if tid not in before and not _test_runner_task(name) and not (ignore and ignore(name))
    }
    if leaked:
        raise AssertionError(f"tasks left running: {sorted(leaked.values())}")


class SignalRecorder:
    """A handler that keeps what it sees and lets a test wait for a condition on it."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self._changed = anyio.Event()

    async def __call__(self, sig: Signal) -> None:
        self.signals.append(sig)
        self._changed.set()
        self._changed = anyio.Event()

    def of_type(self, signal_type: SignalType) -> list[Signal]:
        return [s for s in self.signals if s.type is signal_type]

    def trace(self, trace_id: str) -> list[Signal]:
        """The Signals of one trace, in the order they arrived."""
        return [s for s in self.signals if s.trace_id == trace_id]

    def assert_trace(
        self, trace_id: str, *pattern: str, terminals: int | None = None, only: bool = False
    ) -> list[Signal]:
        """:func:`~.assertions.assert_trace` over what this recorder saw."""
        from .assertions import assert_trace

        return assert_trace(self.signals, trace_id, *pattern, terminals=terminals, only=only)

    async def wait_for_trace(
        self, trace_id: str, *pattern: str, terminals: int | None = None, timeout_s: float = 5.0
    ) -> list[Signal]:
        """Wait until the trace matches *pattern* (see ``assert_trace``); the last mismatch on timeout."""
        from .assertions import assert_trace

        def matches(sigs: list[Signal]) -> bool:
            try:
                assert_trace(sigs, trace_id, *pattern, terminals=terminals)
            except AssertionError:
                return False
            return True

        try:
            await self.wait_for(matches, timeout_s=timeout_s)
        except TimeoutError:
            assert_trace(
                self.signals, trace_id, *pattern, terminals=terminals
            )  # raises, saying what is wrong
        return assert_trace(self.signals, trace_id, *pattern, terminals=terminals)

    async def wait_for(
        self,
        predicate: Callable[[list[Signal]], bool] | None = None,
        *,
        count: int = 1,
        timeout_s: float = 5.0,
    ) -> list[Signal]:
        """Wait until *predicate(signals)* holds (default: at least *count* Signals)."""
        check = predicate or (lambda sigs: len(sigs) >= count)
        with anyio.fail_after(timeout_s):
            while not check(self.signals):
                await self._changed.wait()
        return self.signals


@asynccontextmanager
async def record_namespace(synapse: Synapse, namespace: str) -> AsyncIterator[SignalRecorder]:
    """A :class:`SignalRecorder` of every Signal on *namespace* (``cosmonapse.<ns>.>``) for the block."""
    recorder = SignalRecorder()
    sub = await synapse.subscribe(f"cosmonapse.{namespace}.>", recorder)
    try:
        yield recorder
    finally:
        await synapse.unsubscribe(sub)


@attrs.define
class Cluster:
    """A MemorySynapse with one worker and one orchestrator Dendrite on it."""

    synapse: Synapse
    worker: Dendrite
    orchestrator: Dendrite


@asynccontextmanager
async def memory_cluster(
    *,
    workers: dict[str, NeuronFn] | None = None,
    axons: list[Axon] | None = None,
    namespace: str = "test",
    worker_kw: dict[str, Any] | None = None,
    orchestrator_kw: dict[str, Any] | None = None,
    check_leaks: bool = True,
    synapse: Synapse | None = None,
) -> AsyncIterator[Cluster]:
    """Start a bus, a worker hosting the given Neurons, and an orchestrator; stop them after.

    With *synapse* (connected, owned by the caller) both Dendrites use it instead of a
    fresh ``MemorySynapse``.
    """
    async with AsyncExitStack() as stack:
        if check_leaks:
            await stack.enter_async_context(assert_no_leaked_tasks())
        if synapse is None:
            synapse = MemorySynapse()
            await stack.enter_async_context(synapse)
        worker = Dendrite(
            synapse=synapse, namespace=namespace, role="worker", dendrite_id="worker", **(worker_kw or {})
        )
        for neuron_id, fn in (workers or {}).items():
            worker.attach_axon(Axon(neuron_id=neuron_id, neuron_fn=fn))
        for axon in axons or ():
            worker.attach_axon(axon)
        orchestrator = Dendrite(
            synapse=synapse, namespace=namespace, dendrite_id="orchestrator", **(orchestrator_kw or {})
        )
        await stack.enter_async_context(worker)
        await stack.enter_async_context(orchestrator)
        yield Cluster(synapse, worker, orchestrator)
