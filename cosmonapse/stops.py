"""STOP and STOPPED (§12), done so that a stopped trace stays stopped.

The reference only asks running work nicely and then forgets: a TASK for the
same trace arriving a moment later still runs.  Here every Dendrite keeps a
*tombstone* per stopped trace — a bounded, time-limited memory — and refuses
to start work (TASKs, awards, Engram writes) for a trace it holds.  On STOP a
Dendrite, in this order:

1. delivers STOP into the trace's Pathways (``@pw.on(STOP)`` fires; the core's
   route does this before ours);
2. cancels the cancel scopes of the trace's running TASKs (the Neuron sees
   cancellation and its ``finally`` blocks run; it publishes no reply);
3. fails the trace's pending request/reply ops (``OpCancelled``);
4. closes the trace's Pathways;
5. in a job (never on the router): rolls back or commits the trace's saga
   journal in every hosted Engram, then answers STOPPED (parent = the STOP,
   ``node`` = this Dendrite's id) when it had a stake.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

import anyio

from .core import Core, Route, Service
from .engram.saga import CompensationReport
from .errors import DendriteProtocolError
from .signal import Signal, SignalType
from .telemetry import rollback as rollback_span
from .telemetry import stop_sent, stop_settled

__all__ = [
    "DEFAULT_STOP_MEMORY",
    "DEFAULT_STOP_TTL_S",
    "Settlement",
    "StopService",
    "StopTombstones",
    "TraceStoppedError",
    "refuse_stopped",
]

log: logging.Logger = logging.getLogger("cosmonapse.stops")
T = SignalType

#: How many stopped traces a Dendrite remembers, and for how long.
DEFAULT_STOP_MEMORY = 10_000
DEFAULT_STOP_TTL_S = 3600.0


class TraceStoppedError(DendriteProtocolError):
    """Work was requested on a trace this Dendrite saw STOPped."""


def refuse_stopped(core: Core, trace_id: str | None, what: str) -> None:
    """Raise ``TraceStoppedError`` if *trace_id* was STOPped here."""
    if trace_id is not None and trace_id in core.tombstones:
        raise TraceStoppedError(f"{what}: trace {trace_id} was STOPped; start a new trace instead")


class StopTombstones:
    """Trace ids seen STOPped: at most ``max_entries``, each kept ``ttl_s`` seconds.

    Bounded both ways so a long-running Dendrite cannot grow without limit; the
    oldest tombstone goes first.  Time is ``time.monotonic`` (no event loop needed).
    """

    __slots__ = ("_seen", "max_entries", "ttl_s")

    def __init__(self, max_entries: int = DEFAULT_STOP_MEMORY, ttl_s: float = DEFAULT_STOP_TTL_S) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self.max_entries: int = max_entries
        self.ttl_s: float = ttl_s
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, trace_id: str) -> bool:
        """Remember *trace_id*; True if it was not remembered yet."""
        now = time.monotonic()
        self._expire(now)
        fresh = trace_id not in self._seen
        self._seen[trace_id] = now + self.ttl_s
        self._seen.move_to_end(trace_id)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return fresh

    def __contains__(self, trace_id: object) -> bool:
        if not isinstance(trace_id, str):
            return False
        expires = self._seen.get(trace_id)
        if expires is None:
            return False
        if expires <= time.monotonic():
            del self._seen[trace_id]
            return False
        return True

    def __len__(self) -> int:
        self._expire(time.monotonic())
        return len(self._seen)

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            trace_id, expires = next(iter(seen.items()))
            if expires > now:
                break
            del seen[trace_id]


class Settlement(Protocol):
    """What a STOP asks of the Engrams a Dendrite hosts (the engram service)."""

    def hosts_engrams(self) -> bool: ...

    def decide(self, trace_id: str, rollback: bool) -> bool:
        """The first settlement asked for a trace wins; returns it (True = roll back)."""
        ...

    async def settle(self, trace_id: str, rollback: bool) -> list[CompensationReport]:
        """Roll back or commit the trace's journal; one report per Engram (undone, conflicts)."""
        ...


class StopService(Service):
    """``emit_stop``/``stop_trace`` and what every Dendrite does when a STOP arrives."""

    def __init__(self, core: Core, settlement: Settlement) -> None:
        self._core = core
        self._settlement = settlement

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return ((T.STOP, self._on_stop),)

    def wanted(self) -> Iterable[SignalType]:
        return (T.STOP,)

    def is_stopped(self, trace_id: str) -> bool:
        return trace_id in self._core.tombstones

    def _stop_signal(self, trace_id: str, rollback: bool, reason: str | None) -> Signal:
        payload: dict[str, Any] = {"rollback": bool(rollback)}
        if reason is not None:
            payload["reason"] = reason
        return Signal(type=T.STOP, trace_id=trace_id, payload=payload)

    async def emit_stop(self, trace_id: str, rollback: bool, reason: str | None) -> Signal:
        core = self._core
        core.require_orchestrator("emit_stop()")
        core.require_running("emit_stop()")
        sig = self._stop_signal(trace_id, rollback, reason)
        # Remember at once: a dispatch on this trace right after is refused here,
        # before our own STOP has come back from the bus.
        core.tombstones.add(trace_id)
        stop_sent(trace_id, rollback)
        await core.publish(sig)
        return sig

    async def stop_and_collect(
        self, trace_id: str, rollback: bool, reason: str | None, timeout_s: float, *, first_only: bool
    ) -> list[Signal]:
        """STOP *trace_id*; the STOPPED acks seen within *timeout_s* (only the first with ``first_only``)."""
        core = self._core
        core.require_orchestrator("stop_trace()")
        core.require_running("stop_trace()")
        await core.want(T.STOPPED)
        sig = self._stop_signal(trace_id, rollback, reason)
        core.tombstones.add(trace_id)
        stop_sent(trace_id, rollback)
        acks: list[Signal] = []
        # Not bound to the trace: the STOP itself ends the trace's other ops.
        with core.ops.open(sig.id, trace_id, {T.STOPPED}, bound_to_trace=False) as op:
            await core.publish(sig)
            deadline = anyio.current_time() + timeout_s
            while (ack := await op.next(deadline)) is not None:
                acks.append(ack)
                if first_only:
                    break
        return acks

    # -- router side ------------------------------------------------------------------------
    async def _on_stop(self, sig: Signal) -> None:
        """Synchronous bookkeeping on the router, then the rest as a job."""
        core = self._core
        trace = sig.trace_id
        core.tombstones.add(trace)
        cancelled = core.cancel_trace(trace)
        core.ops.fail_trace(trace, "was STOPped")
        had_pathway = core.close_pathways(trace)
        rollback = bool(sig.payload.get("rollback"))
        if self._settlement.hosts_engrams():
            rollback = self._settlement.decide(trace, rollback)  # the first settlement asked wins
        await core.run_job(self._finish, sig, cancelled, had_pathway, rollback)

    async def _finish(self, sig: Signal, cancelled: int, had_pathway: bool, rollback: bool) -> None:
        """Roll back or commit the trace's Engram writes, then answer STOPPED if we had a stake."""
        settlement = self._settlement
        reports: list[CompensationReport] = []
        if settlement.hosts_engrams():
            with rollback_span(sig.trace_id, rollback) as span:  # OpenTelemetry (no-op when off)
                reports = await settlement.settle(sig.trace_id, rollback)
                span.note(**{"cosmonapse.rollback.compensated": sum(r.restored for r in reports)})
        compensated = sum(r.restored for r in reports)
        conflicts = [r.to_payload() for r in reports if r.conflicts]
        stop_settled(sig, cancelled, compensated, len(conflicts), rollback and settlement.hosts_engrams())
        if not (cancelled or compensated or conflicts or had_pathway):
            return  # no stake here: stay silent
        payload: dict[str, Any] = {
            "rolled_back": rollback and settlement.hosts_engrams(),
            "cancelled": cancelled,
            "compensated": compensated,
            "node": self._core.dendrite_id,
        }
        if conflicts:  # entries another trace wrote since: left as they are (see docs/resilience.md)
            payload["conflicts"] = conflicts
        stopped = Signal(type=T.STOPPED, trace_id=sig.trace_id, parent_id=sig.id, payload=payload)
        await self._core.publish(stopped)
