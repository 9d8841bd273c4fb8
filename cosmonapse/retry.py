"""Declarative retry for the request/reply shape (§13): ``RetryStrategy`` and its loop.

Retry lives only on ``dispatch_and_wait``/``run_with_retry`` because there the
Dendrite owns the whole dispatch → wait → close arc; the streaming shapes hand
a live Pathway to the caller, and re-dispatching behind its back would orphan
it.  With ``new_trace`` (the default) each attempt runs on a fresh trace and
the abandoned one is STOPped before the next try, so a stalled worker — and,
with ``rollback_on_retry``, its half-finished Engram writes — cannot outlive
the retry.  With ``new_trace=False`` the one trace is STOPped when the loop
gives up on it (a timeout or an early close on the last attempt, or the caller
cancelled), if the loop minted it.  Every TASK carries ``meta.attempt`` (0-based).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from .errors import DispatchTimeout, PathwayClosedError
from .ids import new_trace_id
from .pathway import PathwayScope
from .signal import Signal, SignalType
from .telemetry import log_extra, retried

__all__ = ["Attempt", "RetryStrategy", "default_retry_on", "require_strategy", "retry_loop", "run_with_retry"]

log: logging.Logger = logging.getLogger("cosmonapse.retry")

#: One dispatch + wait on the given trace with the given meta; raises on timeout / early close.
Attempt = Callable[[str, dict[str, Any]], Awaitable[Signal]]
#: STOP a trace: (trace_id, rollback, reason).  A Dendrite's is bounded (``stops.GIVE_UP_GRACE_S``).
StopTrace = Callable[[str, bool, str], Awaitable[object]]
#: The longest a cancelled caller waits for the STOP of its attempt (a safety net for other *stop*s).
_STOP_BOUND_S = 1.0


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


def require_strategy(retry: object) -> None:
    """``retry=`` must be a ``RetryStrategy`` (``retry=3`` is a common slip): a TypeError saying so."""
    if not isinstance(retry, RetryStrategy):
        raise TypeError(
            f"retry= takes a RetryStrategy, not {type(retry).__name__} {retry!r}: "
            f"e.g. retry=RetryStrategy(max_attempts={retry if type(retry) is int else 3})"
        )


async def retry_loop(
    retry: RetryStrategy,
    attempt: Attempt,
    stop: StopTrace,
    *,
    trace_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:
    """Run *attempt* again per *retry* until an answer or the attempts run out.

    Returns the resolved Signal (possibly a final ERROR); re-raises the last
    ``DispatchTimeout``/``PathwayClosedError`` when every attempt ended that way.
    Each attempt's TASK carries ``meta.attempt`` (0-based).
    """
    # new_trace=False: every attempt runs on one trace (the caller's, or one minted now).
    shared_trace = None if retry.new_trace else (trace_id or new_trace_id())
    owned = shared_trace is None or trace_id is None  # a trace we minted is ours to STOP
    for n in range(retry.max_attempts):
        trace = shared_trace or new_trace_id()
        outcome: Signal | BaseException
        try:
            outcome = await attempt(trace, {**(meta or {}), "attempt": n})
        except DispatchTimeout as exc:
            outcome = DispatchTimeout(f"{exc}; attempt {n} of {retry.max_attempts}")
        except PathwayClosedError as exc:
            outcome = exc
        except BaseException:
            # The caller gave up (cancelled): do not leave the attempt running on a trace we own.
            if owned:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_BOUND_S):
                    try:
                        await stop(trace, False, "caller cancelled")
                    except Exception:
                        log.debug(
                            "could not STOP trace %s of a cancelled attempt", trace, exc_info=True,
                            extra=log_extra(trace_id=trace),
                        )  # fmt: skip
            raise
        if not retry.retry_on(outcome):
            return _resolve(outcome)
        last = n + 1 >= retry.max_attempts
        if retry.new_trace:
            await stop(trace, retry.rollback_on_retry, retry.reason)
        elif last and owned and isinstance(outcome, BaseException):
            await stop(trace, retry.rollback_on_retry, retry.reason)  # giving up on the shared trace
        if last:
            return _resolve(outcome)
        if retry.on_retry is not None:
            try:
                retry.on_retry(n, outcome)
            except Exception:
                log.warning("on_retry hook raised", exc_info=True)
        retried(n, outcome, trace)
        log.debug(
            "attempt %d on trace %s failed with %r; retrying",
            n,
            trace,
            outcome,
            extra=log_extra(trace_id=trace),
        )
        await anyio.sleep(retry.delay(n))  # allowed: the backoff the strategy asks for
    raise AssertionError("unreachable")  # pragma: no cover


def _resolve(outcome: Signal | BaseException) -> Signal:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class Retrying(Protocol):
    """Anything with ``run_with_retry`` (a Dendrite)."""

    @property
    def run_with_retry(self) -> Callable[..., Awaitable[Signal]]: ...


async def run_with_retry(
    dendrite: Retrying,
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
    """``dendrite.run_with_retry(...)`` as a function."""
    return await dendrite.run_with_retry(
        retry=retry, neuron=neuron, input=input, capabilities=capabilities, timeout_s=timeout_s,
        scope=scope, finalize=finalize, **kw,
    )  # fmt: skip
