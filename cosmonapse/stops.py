"""STOP and STOPPED (§12), done so that a stopped trace stays stopped.

The reference only asks running work nicely and then forgets: a TASK for the
same trace arriving a moment later still runs.  Here every Dendrite keeps a
*tombstone* per stopped trace — a bounded, time-limited memory — and refuses
to start work (TASKs, awards, Engram writes) for a trace it holds.  On STOP a
Dendrite, in this order:

1. delivers STOP into the trace's Pathways (``@pw.on(STOP)`` fires; the router
   does this before calling us);
2. cancels the cancel scopes of the trace's running TASKs (the Neuron sees
   cancellation and its ``finally`` blocks run; it publishes no reply);
3. fails the trace's pending request/reply ops (``OpCancelled``);
4. closes the trace's Pathways;
5. in a task (never on the router): rolls back or commits the trace's saga
   journal in every hosted Engram, then answers STOPPED (parent = the STOP,
   ``node`` = this Dendrite's id) when it had a stake.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio

from .errors import DendriteProtocolError
from .signal import Signal, SignalType

if TYPE_CHECKING:
    from .dendrite import Dendrite

__all__ = ["DEFAULT_STOP_MEMORY", "DEFAULT_STOP_TTL_S", "StopMixin", "StopTombstones", "TraceStoppedError"]

log = logging.getLogger("cosmonapse.stops")
T = SignalType

#: How many stopped traces a Dendrite remembers, and for how long.
DEFAULT_STOP_MEMORY = 10_000
DEFAULT_STOP_TTL_S = 3600.0


class TraceStoppedError(DendriteProtocolError):
    """Work was requested on a trace this Dendrite saw STOPped."""


class StopTombstones:
    """Trace ids seen STOPped: at most ``max_entries``, each kept ``ttl_s`` seconds.

    Bounded both ways so a long-running Dendrite cannot grow without limit; the
    oldest tombstone goes first.  Time is ``time.monotonic`` (no event loop needed).
    """

    __slots__ = ("_seen", "max_entries", "ttl_s")

    def __init__(self, max_entries: int = DEFAULT_STOP_MEMORY, ttl_s: float = DEFAULT_STOP_TTL_S) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
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
        expires = self._seen.get(trace_id)  # type: ignore[call-overload]
        if expires is None:
            return False
        if expires <= time.monotonic():
            del self._seen[trace_id]  # type: ignore[arg-type]
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


class StopMixin:
    """``emit_stop``/``stop_trace`` and what every Dendrite does when a STOP arrives."""

    def is_stopped(self: Dendrite, trace_id: str) -> bool:
        """True when this Dendrite saw (or sent) a STOP for *trace_id* and still remembers it."""
        return trace_id in self._stops

    def _refuse_stopped(self: Dendrite, trace_id: str | None, what: str) -> None:
        if trace_id is not None and trace_id in self._stops:
            raise TraceStoppedError(f"{what}: trace {trace_id} was STOPped; start a new trace instead")

    async def emit_stop(
        self: Dendrite, *, trace_id: str, rollback: bool = False, reason: str | None = None
    ) -> Signal:
        """Broadcast STOP for a whole trace (orchestrators only); returns the STOP Signal.

        Best effort and idempotent: a second STOP cancels nothing new and
        compensates nothing twice.  ``rollback=True`` asks every Engram host to
        undo the trace's journaled writes.
        """
        self._require_orchestrator("emit_stop()")
        self._require_running("emit_stop()")
        payload: dict[str, Any] = {"rollback": bool(rollback)}
        if reason is not None:
            payload["reason"] = reason
        sig = Signal(type=T.STOP, trace_id=trace_id, payload=payload)
        # Remember at once: a dispatch on this trace right after is refused here,
        # before our own STOP has come back from the bus.
        self._stops.add(trace_id)
        await self._publish(sig)
        return sig

    async def stop_trace(
        self: Dendrite,
        trace_id: str,
        *,
        rollback: bool = False,
        reason: str | None = None,
        collect_acks: bool = False,
        timeout_s: float = 1.0,
    ) -> list[Signal]:
        """STOP *trace_id*; with ``collect_acks`` return the STOPPED acks seen within *timeout_s*."""
        if not collect_acks:
            await self.emit_stop(trace_id=trace_id, rollback=rollback, reason=reason)
            return []
        self._require_orchestrator("stop_trace()")
        self._require_running("stop_trace()")
        await self._ensure_sub(self._subject(T.STOPPED), self._route)
        payload: dict[str, Any] = {"rollback": bool(rollback)}
        if reason is not None:
            payload["reason"] = reason
        sig = Signal(type=T.STOP, trace_id=trace_id, payload=payload)
        self._stops.add(trace_id)
        acks: list[Signal] = []
        # Not bound to the trace: the STOP itself ends the trace's other ops.
        with self._ops.open(sig.id, trace_id, {T.STOPPED}, bound_to_trace=False) as op:
            await self._publish(sig)
            deadline = anyio.current_time() + timeout_s
            while (ack := await op.next(deadline)) is not None:
                acks.append(ack)
        return acks

    async def _on_stop(self: Dendrite, sig: Signal) -> None:
        """Router side of STOP: synchronous bookkeeping, then the rest in a task."""
        trace = sig.trace_id
        self._stops.add(trace)
        cancelled = self.cancel_trace(trace)
        self._ops.fail_trace(trace, "was STOPped")
        pathways = self._pathways.get(trace)
        had_pathway = bool(pathways)
        for pw in list(pathways or ()):
            pw._close_now()
        rollback = bool(sig.payload.get("rollback"))
        if self._engram_host:
            rollback = self._engram_host.decide(trace, rollback)  # the first settlement asked wins
        finish = functools.partial(
            self._finish_stop, cancelled=cancelled, had_pathway=had_pathway, rollback=rollback
        )
        await self._start_internal(finish, sig)

    async def _finish_stop(
        self: Dendrite, sig: Signal, *, cancelled: int, had_pathway: bool, rollback: bool
    ) -> None:
        compensated = await self._settle_engrams(sig.trace_id, rollback)
        if not (cancelled or compensated or had_pathway):
            return  # no stake here: stay silent
        stopped = Signal(
            type=T.STOPPED,
            trace_id=sig.trace_id,
            parent_id=sig.id,
            payload={
                "rolled_back": rollback and self._hosts_engrams(),
                "cancelled": cancelled,
                "compensated": compensated,
                "node": self.dendrite_id,
            },
        )
        await self._publish(stopped)
