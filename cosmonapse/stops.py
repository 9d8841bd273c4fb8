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
5. in the core's priority lane (never on the router, never behind handlers):
   rolls back or commits the trace's saga journal in every hosted Engram, then
   answers STOPPED (parent = the STOP, ``node`` = this Dendrite's id) when it had
   a stake.

A call that gives up on its trace (``dispatch_and_wait`` timing out or
cancelled, a retry abandoning an attempt) STOPs it with ``abandon``: the
tombstone at once, the STOP published within ``GIVE_UP_GRACE_S``; a STOP the bus
cannot take that soon (an outage) is handed to the priority lane, which sends it
as soon as the bus takes it (within the bus's own publish timeout).

Durable STOP: when the Dendrite uses a database — a SQLite or Postgres registry
store, else a hosted SQLite or Postgres Engram (a ``StopLedger``) — tombstones
are also written there (an orchestrator writes before it publishes the STOP,
every receiver in the STOP's settlement, before STOPPED) and read back at start.
A worker that restarts after a STOP, or another worker on the same database,
refuses the trace's TASKs.  Same policy as in memory: 10,000 traces, 1 h each.
The check on the hot path stays an in-memory look-up.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

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
    "GIVE_UP_GRACE_S",
    "Settlement",
    "StopLedger",
    "StopService",
    "StopTombstones",
    "TraceStoppedError",
    "find_ledger",
    "refuse_stopped",
]

log: logging.Logger = logging.getLogger("cosmonapse.stops")
T = SignalType

#: How many stopped traces a Dendrite remembers, and for how long.
DEFAULT_STOP_MEMORY = 10_000
DEFAULT_STOP_TTL_S = 3600.0
#: How long a call that gives up spends publishing its STOP (no acks awaited): its slack.
GIVE_UP_GRACE_S = 0.1
#: Longest a STOP waits for its tombstone to be written to the database (then it goes on, logged).
PERSIST_TIMEOUT_S = 5.0


class TraceStoppedError(DendriteProtocolError):
    """Work was requested on a trace this Dendrite saw STOPped."""


def refuse_stopped(core: Core, trace_id: str | None, what: str) -> None:
    """Raise ``TraceStoppedError`` if *trace_id* was STOPped here."""
    if trace_id is not None and trace_id in core.tombstones:
        raise TraceStoppedError(f"{what}: trace {trace_id} was STOPped; start a new trace instead")


@runtime_checkable
class StopLedger(Protocol):
    """Durable tombstones: the SQLite and Postgres registry stores and Engrams implement it."""

    async def remember_stop(self, trace_id: str, ttl_s: float, max_entries: int) -> None:
        """Keep *trace_id* for *ttl_s* seconds, at most *max_entries* kept (oldest dropped)."""
        ...

    async def load_stops(self, max_entries: int) -> list[tuple[str, float]]:
        """The live tombstones as (trace id, seconds left), the one expiring first first."""
        ...


def find_ledger(*candidates: object) -> StopLedger | None:
    """The first of *candidates* (registry store, then hosted Engrams) that keeps tombstones."""
    for candidate in candidates:
        if isinstance(candidate, StopLedger):
            return candidate
    return None


class StopTombstones:
    """Trace ids seen STOPped: at most ``max_entries``, each kept ``ttl_s`` seconds.

    Bounded both ways so a long-running Dendrite cannot grow without limit; the
    oldest tombstone goes first.  Time is ``time.monotonic`` (no event loop needed).
    With a ``ledger`` (set by the Dendrite at start when its store or Engram has
    one) ``persist`` and ``load`` keep them in the database too; the look-up stays here.
    """

    __slots__ = ("_persisted", "_seen", "ledger", "max_entries", "ttl_s")

    def __init__(self, max_entries: int = DEFAULT_STOP_MEMORY, ttl_s: float = DEFAULT_STOP_TTL_S) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self.max_entries: int = max_entries
        self.ttl_s: float = ttl_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        #: Where tombstones are stored durably (None: this process only).
        self.ledger: StopLedger | None = None
        self._persisted: OrderedDict[str, None] = OrderedDict()  # written by us already: not again

    def add(self, trace_id: str, ttl_s: float | None = None) -> bool:
        """Remember *trace_id* (for *ttl_s*, default ``ttl_s``); True if it was not remembered yet."""
        now = time.monotonic()
        self._expire(now)
        fresh = trace_id not in self._seen
        self._seen[trace_id] = now + (self.ttl_s if ttl_s is None else ttl_s)
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

    async def load(self) -> int:
        """Add the ledger's live tombstones (STOPs other processes, or an earlier run, saw)."""
        ledger = self.ledger
        if ledger is None:
            return 0
        with anyio.fail_after(PERSIST_TIMEOUT_S * 2):
            rows = await ledger.load_stops(self.max_entries)
        for trace_id, left_s in rows:  # expiring first comes first: the memory stays in expiry order
            if trace_id not in self:
                self.add(trace_id, left_s)
            self._mark_persisted(trace_id)
        return len(rows)

    async def persist(self, trace_id: str) -> None:
        """Write *trace_id*'s tombstone to the ledger once; a failure is logged, never raised."""
        ledger = self.ledger
        if ledger is None or trace_id in self._persisted:
            return
        try:
            with anyio.fail_after(PERSIST_TIMEOUT_S):
                await ledger.remember_stop(trace_id, self.ttl_s, self.max_entries)
        except Exception as exc:
            log.warning(
                "could not store the tombstone of STOPped trace %s (%s: %s); it is kept in memory only",
                trace_id,
                type(exc).__name__,
                exc,
            )
            return
        self._mark_persisted(trace_id)

    def _mark_persisted(self, trace_id: str) -> None:
        self._persisted[trace_id] = None
        while len(self._persisted) > self.max_entries:
            self._persisted.popitem(last=False)

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

    def __init__(
        self, core: Core, settlement: Settlement, ledger: Callable[[], StopLedger | None] = lambda: None
    ) -> None:
        self._core = core
        self._settlement = settlement
        self._ledger = ledger  # asked at start: the store or Engram attached by then

    async def start(self) -> None:
        """Before anything is subscribed: the database's tombstones, so no stopped TASK runs here."""
        tombstones = self._core.tombstones
        if isinstance(tombstones, StopTombstones):
            tombstones.ledger = self._ledger()
        try:
            loaded = await tombstones.load()
        except Exception as exc:
            log.warning("could not read stored STOP tombstones (%s: %s)", type(exc).__name__, exc)
        else:
            if loaded:
                log.info("%d STOPped traces loaded from the database", loaded)

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
        # before our own STOP has come back from the bus.  Stored before it is published:
        # a worker that subscribes after the publish reads it at start.
        core.tombstones.add(trace_id)
        await core.tombstones.persist(trace_id)
        stop_sent(trace_id, rollback)
        await core.publish(sig)
        return sig

    async def stop_and_collect(
        self, trace_id: str, rollback: bool, reason: str | None, timeout_s: float, *, first_only: bool
    ) -> list[Signal]:
        """STOP *trace_id*; the STOPPED acks seen within *timeout_s*.

        With ``first_only``, the first ack from another node; our own ack (we had a
        stake too: a Pathway, an Engram) is returned only if no other came in time.

        *timeout_s* bounds the whole call, publishing included: a STOP the bus cannot
        take in time goes to the priority lane (sent when it can) and no ack is awaited.
        """
        core = self._core
        core.require_orchestrator("stop_trace()")
        core.require_running("stop_trace()")
        deadline = anyio.current_time() + timeout_s
        await core.want(T.STOPPED)
        sig = self._stop_signal(trace_id, rollback, reason)
        core.tombstones.add(trace_id)
        with anyio.move_on_at(deadline) as storing:  # stored before it is published, within the deadline
            await core.tombstones.persist(trace_id)
        stop_sent(trace_id, rollback)
        acks: list[Signal] = []
        # Not bound to the trace: the STOP itself ends the trace's other ops.
        with core.ops.open(sig.id, trace_id, {T.STOPPED}, bound_to_trace=False) as op:
            # a database too slow for the deadline: the priority lane stores, then publishes
            if storing.cancelled_caught or not await core.publish_by(sig, deadline):
                self._send_later(sig)
                return acks
            own: Signal | None = None
            while (ack := await op.next(deadline)) is not None:
                if first_only and (ack.payload or {}).get("node") == core.dendrite_id:
                    own = ack  # our own quiescence says nothing about the node that ran the TASK
                    continue
                acks.append(ack)
                if first_only:
                    break
            if first_only and not acks and own is not None:
                acks.append(own)  # only we had a stake
        return acks

    async def abandon(self, trace_id: str, reason: str, *, rollback: bool = False) -> None:
        """STOP a trace a caller gave up on; never raises, never takes longer than ``GIVE_UP_GRACE_S``.

        Shielded (the caller may be cancelled).  The tombstone is filed at once; no ack
        is awaited.  When the bus does not take the STOP within the grace it goes to the
        priority lane, which sends it as soon as the bus does.
        """
        core = self._core
        if not core.running:
            return
        core.tombstones.add(trace_id)
        sig = self._stop_signal(trace_id, rollback, reason)
        stop_sent(trace_id, rollback)
        deadline = anyio.current_time() + GIVE_UP_GRACE_S
        sent = False
        with anyio.CancelScope(shield=True):
            try:
                with anyio.move_on_at(deadline):  # a slow database: stored and sent by the priority lane
                    await core.tombstones.persist(trace_id)
                    sent = await core.publish_by(sig, deadline)
            except Exception:
                log.warning("could not publish STOP for abandoned trace %s", trace_id, exc_info=True)
                return
        if not sent:
            self._send_later(sig)

    def _send_later(self, sig: Signal) -> None:
        if not self._core.try_priority(self._publish_late, sig):
            log.warning("STOP for trace %s not sent: the bus did not take it in time", sig.trace_id)

    async def _publish_late(self, sig: Signal) -> None:
        try:
            await self._core.tombstones.persist(sig.trace_id)  # once: a no-op when already stored
            await self._core.publish(sig)
        except Exception as exc:
            log.warning("STOP for trace %s could not be sent: %s", sig.trace_id, exc)

    def _stores_tombstones(self) -> bool:
        """Whether a STOP's settlement has a tombstone to write (any store but one in memory only)."""
        tombstones = self._core.tombstones
        return not isinstance(tombstones, StopTombstones) or tombstones.ledger is not None

    # -- router side ------------------------------------------------------------------------
    async def _on_stop(self, sig: Signal) -> None:
        """Synchronous bookkeeping on the router, then the rest as a job."""
        core = self._core
        trace = sig.trace_id
        core.tombstones.add(trace)
        cancelled = core.cancel_trace(trace)
        core.ops.fail_trace(trace, "was STOPped")
        had_pathway = core.close_pathways(trace, "the trace was STOPped")
        rollback = bool(sig.payload.get("rollback"))
        if self._settlement.hosts_engrams():
            rollback = self._settlement.decide(trace, rollback)  # the first settlement asked wins
        elif not (cancelled or had_pathway or self._stores_tombstones()):
            return  # no stake here, nothing to settle or store: stay silent
        await core.run_priority(self._finish, sig, cancelled, had_pathway, rollback)

    async def _finish(self, sig: Signal, cancelled: int, had_pathway: bool, rollback: bool) -> None:
        """Store the tombstone, settle the trace's Engram writes, answer STOPPED if we had a stake."""
        await self._core.tombstones.persist(sig.trace_id)
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
