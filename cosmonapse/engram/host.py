"""Serving hosted engrams: RECALL → RECALLED, IMPRINT → IMPRINTED, and the saga hooks.

Runs in tasks the Dendrite starts, never on its router.  Each engram has one
lock held across "is this trace STOPped? → write + journal" and across
compensation, so a write racing a rollback STOP either lands before the
rollback (and is undone) or is refused after it — it never survives.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio

from ..signal import Directed, Signal, SignalType
from ..telemetry import log_extra
from .base import Engram
from .model import Hit, ImprintReceipt
from .saga import CompensationReport

__all__ = ["EngramHost"]

log: logging.Logger = logging.getLogger("cosmonapse.engram")
T = SignalType
#: Traces whose settlement (commit or rollback) a host remembers.
MAX_DECISIONS = 10_000


class EngramHost:
    """The engrams one Dendrite hosts, by id."""

    def __init__(self, is_stopped: Callable[[str], bool]) -> None:
        self._is_stopped = is_stopped
        self.engrams: dict[str, Engram] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._decided: OrderedDict[str, bool] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self.engrams)

    def add(self, engram: Engram) -> None:
        if engram.engram_id in self.engrams:
            raise ValueError(f"an engram with id {engram.engram_id!r} is already attached")
        self.engrams[engram.engram_id] = engram

    def remove(self, engram_id: str) -> Engram:
        self._locks.pop(engram_id, None)
        return self.engrams.pop(engram_id)

    def _lock(self, engram: Engram) -> anyio.Lock:
        lock = self._locks.get(engram.engram_id)
        if lock is None:
            lock = self._locks[engram.engram_id] = anyio.Lock()
        return lock

    def decide(self, trace_id: str, rollback: bool) -> bool:
        """The first settlement asked for a trace wins; returns it (True = roll back).

        Called by the router in arrival order, so FINAL-then-STOP(rollback) commits and
        STOP(rollback)-then-STOP commits nothing, whichever settle task runs first.
        """
        decided = self._decided.get(trace_id)
        if decided is None:
            decided = self._decided[trace_id] = rollback
            while len(self._decided) > MAX_DECISIONS:
                self._decided.popitem(last=False)
        return decided

    def targets(self, sig: Signal) -> list[Engram]:
        """``directed.id`` picks exactly that engram (or none); else every engram of ``directed.type``."""
        directed = sig.directed
        if directed is None:
            return []
        if directed.id:
            engram = self.engrams.get(directed.id)
            return [engram] if engram is not None else []
        if directed.type:
            return [e for e in self.engrams.values() if e.engram_kind == directed.type]
        return []

    @staticmethod
    def _reply(sig: Signal, engram: Engram, stype: SignalType, payload: dict[str, Any]) -> Signal:
        return Signal(
            type=stype,
            trace_id=sig.trace_id,
            parent_id=sig.id,
            directed=Directed(engram.engram_id, engram.engram_kind),
            payload=payload,
        )

    async def serve_recall(self, sig: Signal) -> list[Signal]:
        """RECALLED from every targeted engram that can serve the query.

        A backend failure is answered with ``error`` (and no hits) rather than
        silence, so the caller learns at once instead of timing out.
        """
        p = sig.payload
        query = _dict(p.get("query"))
        replies = []
        for engram in self.targets(sig):
            try:
                if not engram.can_serve(query):
                    continue
                started = time.perf_counter()
                hits = await engram.recall(
                    query,
                    filters=p.get("filters") if isinstance(p.get("filters"), dict) else None,
                    context_ref=p.get("context_ref"),
                    deadline_ms=p.get("deadline_ms"),
                    min_confidence=p.get("min_confidence"),
                )
                payload: dict[str, Any] = {
                    "engram_id": engram.engram_id,
                    "hits": [h.to_wire() if isinstance(h, Hit) else h for h in hits],
                    "truncated": bool(getattr(hits, "truncated", False)),
                    "took_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            except Exception as exc:
                log.exception("engram %s failed a recall", engram.engram_id, extra=log_extra(sig))
                payload = {
                    "engram_id": engram.engram_id,
                    "hits": [],
                    "truncated": False,
                    "error": f"engram_exception: {exc}",
                }
            replies.append(self._reply(sig, engram, T.RECALLED, payload))
        return replies

    async def serve_imprint(self, sig: Signal) -> list[Signal]:
        """IMPRINTED from every targeted engram; refusals and failures go in ``error``."""
        p = sig.payload
        op = str(p.get("op") or "")
        entry = _dict(p.get("entry"))
        replies = []
        for engram in self.targets(sig):
            async with self._lock(engram):
                if self._is_stopped(sig.trace_id):
                    receipt = ImprintReceipt(
                        engram.engram_id, op, error=f"trace_stopped: trace {sig.trace_id} was STOPped"
                    )
                else:
                    try:
                        receipt = await engram.imprint(
                            op, entry, merge_key=p.get("merge_key"), imprint_id=sig.id, trace_id=sig.trace_id
                        )
                    except Exception as exc:
                        log.exception("engram %s failed an imprint", engram.engram_id, extra=log_extra(sig))
                        receipt = ImprintReceipt(engram.engram_id, op, error=f"engram_exception: {exc}")
            replies.append(self._reply(sig, engram, T.IMPRINTED, receipt.to_payload()))
        return replies

    async def settle(self, trace_id: str, rollback: bool) -> int:
        """On STOP: compensate (rollback) or commit *trace_id* everywhere; returns writes undone."""
        return sum(r.restored for r in await self.settle_report(trace_id, rollback))

    async def settle_report(self, trace_id: str, rollback: bool) -> list[CompensationReport]:
        """``settle``, returning one report per hosted engram (restored count, conflicting entries)."""
        reports = []
        for engram in list(self.engrams.values()):
            async with self._lock(engram):
                try:
                    if rollback:
                        done = await engram.compensate(trace_id)
                        reports.append(CompensationReport.coerce(done, engram.engram_id, trace_id))
                    else:
                        await engram.commit(trace_id)
                except Exception:
                    log.exception(
                        "engram %s failed to settle trace %s", engram.engram_id, trace_id,
                        extra=log_extra(trace_id=trace_id),
                    )  # fmt: skip
        return reports

    async def commit(self, trace_id: str) -> None:
        """On FINAL: the trace's writes are final; drop its journal (unless a rollback came first)."""
        if not self._decided.get(trace_id, False):
            await self.settle(trace_id, rollback=False)


def _dict(value: Any) -> dict[str, Any]:
    """*value* if it is a JSON object, else an empty one (a malformed request is served as empty)."""
    return value if isinstance(value, dict) else {}
