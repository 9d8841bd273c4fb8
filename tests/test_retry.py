"""RetryStrategy and the retry loop (§13): attempts, traces, STOPs, hooks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cosmonapse import (
    DendriteProtocolError,
    DispatchTimeout,
    NeuronContext,
    PathwayClosedError,
    RetryStrategy,
    Signal,
    SignalType,
    default_retry_on,
)
from cosmonapse.testing.harness import SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


def _sig(stype: SignalType, **payload: Any) -> Signal:
    return Signal(type=stype, payload=payload)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (TimeoutError(), True),
        (DispatchTimeout("x"), True),
        (PathwayClosedError("x"), True),
        (ValueError(), False),
        (_sig(T.ERROR, code="X", message="", recoverable=True), True),
        (_sig(T.ERROR, code="X", message="", recoverable=False), False),
        (_sig(T.ERROR, code="X", message=""), False),
        (_sig(T.FINAL, result={}), False),
        (_sig(T.AGENT_OUTPUT, output={}), False),
        (_sig(T.CLARIFICATION, question="?"), False),
        (_sig(T.PERMISSION, action="rm"), False),
    ],
)
def test_default_retry_on(outcome: object, expected: bool) -> None:
    assert default_retry_on(outcome) is expected


def test_strategy_defaults_and_validation() -> None:
    s = RetryStrategy()
    assert (s.max_attempts, s.timeout_s, s.new_trace, s.rollback_on_retry, s.reason) == (
        3, 30.0, True, False, "retry",
    )  # fmt: skip
    assert s.backoff(5) == 0.0 and s.on_retry is None and s.retry_on is default_retry_on
    with pytest.raises(ValueError):
        RetryStrategy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryStrategy(timeout_s=0)
    with pytest.raises(AttributeError):
        s.max_attempts = 4  # type: ignore[misc]


class Flaky:
    """Fails (recoverably) or stalls for the first *bad* attempts, then answers."""

    def __init__(self, bad: int, mode: str = "error") -> None:
        self.bad = bad
        self.mode = mode
        self.calls: list[tuple[str, int]] = []
        self.cancelled: list[str] = []
        self._changed = anyio.Event()

    async def wait_cancelled(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.cancelled) < count:
                await self._changed.wait()

    async def __call__(self, input: dict[str, Any], context: NeuronContext) -> Any:
        self.calls.append((context.trace_id, context.task.meta.get("attempt")))
        if len(self.calls) <= self.bad:
            if self.mode == "error":
                return {"__error__": True, "code": "BUSY", "message": "later", "recoverable": True}
            if self.mode == "fatal":
                return {"__error__": True, "code": "NO", "message": "never"}
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(context.trace_id)
                self._changed.set()
                self._changed = anyio.Event()
                raise
        return {"ok": len(self.calls)}


async def test_recoverable_error_is_retried_on_fresh_traces_and_abandoned_traces_stopped() -> None:
    flaky = Flaky(bad=2)
    async with memory_cluster(workers={"flaky": flaky}) as c:
        stops = SignalRecorder()
        c.orchestrator.on_stop(stops)
        reply = await c.orchestrator.run_with_retry(
            neuron="flaky", input={}, retry=RetryStrategy(timeout_s=5)
        )
        await stops.wait_for(count=2)
    assert reply.type is T.AGENT_OUTPUT and reply.payload["output"] == {"ok": 3}
    traces = [t for t, _ in flaky.calls]
    assert [a for _, a in flaky.calls] == [0, 1, 2]
    assert len(set(traces)) == 3 and reply.trace_id == traces[2]
    assert [s.trace_id for s in stops.signals] == traces[:2]
    assert all(s.payload == {"rollback": False, "reason": "retry"} for s in stops.signals)
    assert c.worker.is_stopped(traces[0]) and not c.worker.is_stopped(traces[2])


async def test_stalled_attempts_are_stopped_and_the_last_timeout_reraised() -> None:
    flaky = Flaky(bad=99, mode="stall")
    async with memory_cluster(workers={"flaky": flaky}) as c:
        with pytest.raises(DispatchTimeout, match="attempt 2"):
            await c.orchestrator.dispatch_and_wait(
                neuron="flaky", input={}, retry=RetryStrategy(max_attempts=3, timeout_s=0.1)
            )
        # every abandoned attempt was cancelled on the worker by its STOP
        await flaky.wait_cancelled(3)
    assert sorted(flaky.cancelled) == sorted(t for t, _ in flaky.calls)


async def test_a_final_error_is_returned_without_retry() -> None:
    flaky = Flaky(bad=5, mode="fatal")
    async with memory_cluster(workers={"flaky": flaky}) as c:
        reply = await c.orchestrator.run_with_retry(neuron="flaky", input={}, retry=RetryStrategy())
    assert reply.type is T.ERROR and reply.payload["code"] == "NO"
    assert len(flaky.calls) == 1


async def test_exhausted_recoverable_errors_return_the_last_error() -> None:
    flaky = Flaky(bad=5)
    async with memory_cluster(workers={"flaky": flaky}) as c:
        reply = await c.orchestrator.run_with_retry(
            neuron="flaky", input={}, retry=RetryStrategy(max_attempts=2)
        )
    assert reply.type is T.ERROR and reply.payload["recoverable"] is True
    assert len(flaky.calls) == 2


async def test_new_trace_false_keeps_the_callers_trace_and_sends_no_stop() -> None:
    flaky = Flaky(bad=1)
    trace = "trc_01JZ3M7Q2X8K4N6R9T1V3W5Y6Z"
    async with memory_cluster(workers={"flaky": flaky}) as c:
        stops = SignalRecorder()
        c.orchestrator.on_stop(stops)
        reply = await c.orchestrator.run_with_retry(
            neuron="flaky", input={}, trace_id=trace, retry=RetryStrategy(new_trace=False)
        )
        # a probe STOP on another trace, to know no retry STOP is still in flight
        await c.orchestrator.emit_stop(trace_id="trc_probe")
        await stops.wait_for(count=1)
    assert reply.trace_id == trace and [t for t, _ in flaky.calls] == [trace, trace]
    assert [s.trace_id for s in stops.signals] == ["trc_probe"]


async def test_hooks_backoff_and_rollback_flag() -> None:
    flaky = Flaky(bad=2)
    seen: list[tuple[int, str]] = []
    delays: list[int] = []

    def backoff(attempt: int) -> float:
        delays.append(attempt)
        if attempt == 1:
            raise RuntimeError("bad backoff is ignored")
        return 0.001

    def on_retry(attempt: int, outcome: object) -> None:
        assert isinstance(outcome, Signal)
        seen.append((attempt, outcome.payload["code"]))
        raise RuntimeError("bad hook is ignored")

    strategy = RetryStrategy(backoff=backoff, on_retry=on_retry, rollback_on_retry=True, reason="again")
    async with memory_cluster(workers={"flaky": flaky}) as c:
        stops = SignalRecorder()
        c.orchestrator.on_stop(stops)
        reply = await c.orchestrator.run_with_retry(neuron="flaky", input={}, retry=strategy)
        await stops.wait_for(count=2)
    assert reply.type is T.AGENT_OUTPUT
    assert seen == [(0, "BUSY"), (1, "BUSY")] and delays == [0, 1]
    assert all(s.payload == {"rollback": True, "reason": "again"} for s in stops.signals)


async def test_custom_retry_on_and_call_timeout() -> None:
    flaky = Flaky(bad=1, mode="fatal")
    strategy = RetryStrategy(timeout_s=None, retry_on=lambda o: isinstance(o, Signal) and o.type is T.ERROR)
    async with memory_cluster(workers={"flaky": flaky}) as c:
        reply = await c.orchestrator.run_with_retry(neuron="flaky", input={}, timeout_s=5, retry=strategy)
    assert reply.type is T.AGENT_OUTPUT and len(flaky.calls) == 2


async def test_cancelled_caller_stops_its_attempt() -> None:
    flaky = Flaky(bad=99, mode="stall")
    async with memory_cluster(workers={"flaky": flaky}) as c:
        with anyio.move_on_after(0.2):
            await c.orchestrator.run_with_retry(neuron="flaky", input={}, retry=RetryStrategy(timeout_s=30))
        await flaky.wait_cancelled(1)
    assert flaky.cancelled == [flaky.calls[0][0]]


async def test_retry_is_orchestrator_only() -> None:
    async with memory_cluster(workers={"flaky": Flaky(0)}) as c:
        with pytest.raises(DendriteProtocolError):
            await c.worker.run_with_retry(neuron="flaky", input={}, retry=RetryStrategy())
