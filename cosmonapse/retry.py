"""Declarative retry for the request/reply shape (§13): ``RetryStrategy`` and its loop.

Retry lives only on ``dispatch_and_wait``/``run_with_retry`` because there the
Dendrite owns the whole dispatch → wait → close arc; the streaming shapes hand
a live Pathway to the caller, and re-dispatching behind its back would orphan
it.  With ``new_trace`` (the default) each attempt runs on a fresh trace and
the abandoned one is STOPped before the next try, so a stalled worker — and,
with ``rollback_on_retry``, its half-finished Engram writes — cannot outlive
the retry.  Every TASK carries ``meta.attempt`` (0-based).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .errors import DispatchTimeout, PathwayClosedError, PathwayTimeout
from .ids import new_trace_id
from .signal import Signal, SignalType

if TYPE_CHECKING:
    from .dendrite import Dendrite
    from .pathway import PathwayScope

__all__ = ["RetryMixin", "RetryStrategy", "default_retry_on", "run_with_retry"]

log = logging.getLogger("cosmonapse.retry")


def default_retry_on(outcome: object) -> bool:
    """Retry a timeout, a Pathway closed before a reply, or an ERROR flagged ``recoverable``.

    FINAL, AGENT_OUTPUT, CLARIFICATION and PERMISSION are answers, never retried.
    """
    if isinstance(outcome, TimeoutError | PathwayClosedError):
        return True
    if isinstance(outcome, Signal):
        return outcome.type is SignalType.ERROR and bool(outcome.payload.get("recoverable"))
    return False


def _no_backoff(attempt: int) -> float:
    return 0.0


@dataclasses.dataclass(frozen=True)
class RetryStrategy:
    """How many times to try, how long to wait each time, and what counts as a failure."""

    #: Total attempts including the first (>= 1).
    max_attempts: int = 3
    #: Per-attempt wait for a reply; ``None`` uses the call's ``timeout_s``.
    timeout_s: float | None = 30.0
    #: Seconds to sleep after failed attempt *i* (0-based); an exception counts as 0.
    backoff: Callable[[int], float] = _no_backoff
    #: Predicate over the outcome (a Signal, or the exception instance).
    retry_on: Callable[[object], bool] = default_retry_on
    #: Fresh trace per attempt, and STOP the abandoned one.
    new_trace: bool = True
    #: The STOP of an abandoned attempt also rolls back its Engram writes.
    rollback_on_retry: bool = False
    #: ``(attempt_index, outcome)`` before the backoff; its errors are logged.
    on_retry: Callable[[int, object], None] | None = None
    #: STOP reason for abandoned attempts.
    reason: str = "retry"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {self.max_attempts}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, not {self.timeout_s}")

    def delay(self, attempt: int) -> float:
        try:
            return max(0.0, float(self.backoff(attempt)))
        except Exception:
            log.warning("backoff(%d) raised; retrying at once", attempt, exc_info=True)
            return 0.0


async def run_with_retry(
    dendrite: Dendrite,
    *,
    retry: RetryStrategy,
    neuron: str | None = None,
    input: dict[str, Any],
    capabilities: list[str] | None = None,
    timeout_s: float | None = 30.0,
    scope: PathwayScope = "all",
    finalize: bool | None = None,
    trace_id: str | None = None,
    meta: dict[str, Any] | None = None,
    **kw: Any,
) -> Signal:
    """Dispatch and wait, again per *retry*, until an answer or the attempts run out.

    Returns the resolved Signal (possibly a final ERROR); re-raises the last
    ``DispatchTimeout``/``PathwayClosedError`` when every attempt ended that way.
    """
    dendrite._require_orchestrator("run_with_retry()")
    dendrite._require_running("run_with_retry()")
    wait_s = retry.timeout_s if retry.timeout_s is not None else timeout_s
    # new_trace=False: every attempt runs on one trace (the caller's, or one minted now).
    shared_trace = None if retry.new_trace else (trace_id or new_trace_id())
    for attempt in range(retry.max_attempts):
        trace = shared_trace or new_trace_id()
        outcome: Signal | BaseException = await _attempt(
            dendrite,
            trace=trace,
            owned=shared_trace is None or trace_id is None,
            neuron=neuron,
            input=input,
            capabilities=capabilities,
            wait_s=wait_s,
            scope=scope,
            finalize=finalize,
            meta={**(meta or {}), "attempt": attempt},
            **kw,
        )
        if not retry.retry_on(outcome):
            return _resolve(outcome)
        if retry.new_trace:
            await dendrite.emit_stop(trace_id=trace, rollback=retry.rollback_on_retry, reason=retry.reason)
        if attempt + 1 >= retry.max_attempts:
            return _resolve(outcome)
        if retry.on_retry is not None:
            try:
                retry.on_retry(attempt, outcome)
            except Exception:
                log.warning("on_retry hook raised", exc_info=True)
        log.debug("attempt %d on trace %s failed with %r; retrying", attempt, trace, outcome)
        await anyio.sleep(retry.delay(attempt))  # allowed: the backoff the strategy asks for
    raise AssertionError("unreachable")  # pragma: no cover


def _resolve(outcome: Signal | BaseException) -> Signal:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def _attempt(
    dendrite: Dendrite,
    *,
    trace: str,
    owned: bool,
    neuron: str | None,
    input: dict[str, Any],
    capabilities: list[str] | None,
    wait_s: float | None,
    scope: PathwayScope,
    finalize: bool | None,
    meta: dict[str, Any],
    **kw: Any,
) -> Signal | BaseException:
    """One dispatch + wait; the outcome is the Signal or the timeout/closed exception."""
    pw = await dendrite.dispatch(
        neuron=neuron,
        input=input,
        capabilities=capabilities,
        scope=scope,
        finalize=finalize,
        trace_id=trace,
        meta=meta,
        **kw,
    )
    try:
        return await pw.wait(wait_s)
    except PathwayTimeout:
        return DispatchTimeout(
            f"no reply from {_describe(neuron, capabilities)} within {wait_s} s "
            f"(attempt {meta['attempt']}, trace {trace})"
        )
    except PathwayClosedError as exc:
        return exc
    except BaseException:
        # The caller gave up (cancelled): do not leave the attempt running on a trace we own.
        if owned:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                try:
                    await dendrite.emit_stop(trace_id=trace, reason="caller cancelled")
                except Exception:
                    log.debug("could not STOP trace %s of a cancelled attempt", trace, exc_info=True)
        raise
    finally:
        pw._close_now()


def _describe(neuron: str | None, capabilities: list[str] | None) -> str:
    if neuron:
        return f"neuron {neuron!r}"
    if capabilities:
        return f"any neuron with capabilities {sorted(capabilities)}"
    return "any catch-all neuron (open call)"


class RetryMixin:
    """``Dendrite.run_with_retry``."""

    async def run_with_retry(
        self: Dendrite,
        *,
        retry: RetryStrategy,
        neuron: str | None = None,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        timeout_s: float | None = 30.0,
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        **kw: Any,
    ) -> Signal:
        """Dispatch and wait, retrying per *retry* (see ``RetryStrategy``)."""
        return await run_with_retry(
            self,
            retry=retry,
            neuron=neuron,
            input=input,
            capabilities=capabilities,
            timeout_s=timeout_s,
            scope=scope,
            finalize=finalize,
            **kw,
        )
