"""The Dendrite's Engram service: hosting (attach/detach, serving) and calling (recall/imprint) — §14.

Calls are request/reply ops correlated by the request's id, and every one has
a deadline (``Dendrite.engram_deadline_ms``, 5 s unless set): the reference
waits forever when nobody answers; here the caller gets ``EngramTimeout``.
An op is bound to its trace, so FINAL/ERROR/STOP on the trace or the Dendrite
stopping ends the wait with ``EngramCancelled``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import anyio

from ..context import current_task
from ..core import Core, Route, Service
from ..errors import DendriteProtocolError
from ..ids import new_trace_id
from ..ops import OpCancelled
from ..signal import Directed, Signal, SignalType
from ..stops import refuse_stopped
from .base import Engram
from .errors import EngramCancelled, EngramError, EngramNotBound, EngramTimeout
from .host import EngramHost
from .model import IMPRINT_OPS, RECALL_MODES, Hit, ImprintReceipt, RecallResult
from .saga import CompensationReport

__all__ = ["DEFAULT_ENGRAM_DEADLINE_MS", "EngramService"]

log: logging.Logger = logging.getLogger("cosmonapse.engram")
T = SignalType

#: Deadline of a recall, or an imprint that awaits its ack, when the call gives none.
DEFAULT_ENGRAM_DEADLINE_MS = 5000


def _address(engram_id: str | None, engram_kind: str | None) -> Directed:
    if not engram_id and not engram_kind:
        raise EngramNotBound("name the engram: pass engram_id= or engram_kind=")
    return Directed(engram_id or None, engram_kind or None)


def _ambient(trace_id: str | None, parent_id: str | None) -> tuple[str, str | None]:
    """Inside a running TASK: its trace and its id as parent.  Outside: explicit, else a fresh trace."""
    task = current_task.get()
    if trace_id is None:
        trace_id = task.trace_id if task is not None else new_trace_id()
    if parent_id is None and task is not None and task.trace_id == trace_id:
        parent_id = task.id
    return trace_id, parent_id


class EngramService(Service):
    """Host engrams (serve RECALL/IMPRINT, settle sagas) and call them."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.host: EngramHost = EngramHost(lambda trace_id: trace_id in core.tombstones)
        #: Deadline of recall / acknowledged imprint calls that give none.
        self.deadline_ms: int = DEFAULT_ENGRAM_DEADLINE_MS

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return ((T.RECALL, self._on_request), (T.IMPRINT, self._on_request), (T.FINAL, self._on_final))

    def wanted(self) -> Iterable[SignalType]:
        return (T.RECALL, T.IMPRINT, T.FINAL, T.ERROR) if self.host else ()

    # -- hosting ---------------------------------------------------------------------
    def attach(self, engram: Engram) -> None:
        try:
            self.host.add(engram)
        except ValueError as exc:
            raise DendriteProtocolError(str(exc)) from None
        self._core.refresh()
        if self._core.running:
            self._core.soon(self._core.publish, engram.register_signal())

    def detach(self, engram_id: str) -> None:
        try:
            self.host.remove(engram_id)
        except KeyError:
            raise DendriteProtocolError(f"no engram {engram_id!r} is attached") from None
        self._core.refresh()

    async def announce(self) -> None:
        for engram in list(self.host.engrams.values()):
            await self._core.publish(engram.register_signal())

    async def _on_request(self, sig: Signal) -> None:
        if self.host:
            await self._core.run_job(self._serve, sig)

    async def _serve(self, sig: Signal) -> None:
        host = self.host
        replies = await (host.serve_recall(sig) if sig.type is T.RECALL else host.serve_imprint(sig))
        for reply in replies:
            await self._core.publish(reply)

    async def _on_final(self, sig: Signal) -> None:
        if self.host:
            self.host.decide(sig.trace_id, rollback=False)  # FINAL commits the saga
            await self._core.run_job(self.host.commit, sig.trace_id)

    # -- Settlement (asked by the STOP service) ----------------------------------------
    def hosts_engrams(self) -> bool:
        return bool(self.host)

    def decide(self, trace_id: str, rollback: bool) -> bool:
        return self.host.decide(trace_id, rollback)

    async def settle(self, trace_id: str, rollback: bool) -> list[CompensationReport]:
        if not self.host:
            return []
        return await self.host.settle_report(trace_id, rollback)

    # -- calling ---------------------------------------------------------------------
    def _engram_deadline(self, deadline_ms: int | None) -> float:
        ms = deadline_ms if deadline_ms is not None else self.deadline_ms
        if ms is None or ms <= 0:
            raise ValueError("an engram call needs a deadline > 0 ms")
        return anyio.current_time() + ms / 1000

    async def recall(
        self,
        *,
        engram_id: str | None = None,
        engram_kind: str | None = None,
        query: dict[str, Any],
        filters: dict[str, Any] | None = None,
        context_ref: str | None = None,
        deadline_ms: int | None = None,
        recall_mode: str = "first",
        min_confidence: float | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RecallResult:
        """Ask engrams for entries matching *query*.

        ``first`` returns the first answer; ``merge``/``all`` collect answers until
        the deadline and sort the hits by score.  Raises ``EngramTimeout`` when no
        engram answered in time, ``EngramError`` when every answer was an error.
        """
        core = self._core
        core.require_running("recall()")
        directed = _address(engram_id, engram_kind)
        if recall_mode not in RECALL_MODES:
            raise ValueError(f"recall_mode must be one of {sorted(RECALL_MODES)}, not {recall_mode!r}")
        if not isinstance(query, dict):
            raise TypeError(f"query must be a dict, not {type(query).__name__}")
        trace_id, parent_id = _ambient(trace_id, parent_id)
        refuse_stopped(core, trace_id, "recall()")
        payload: dict[str, Any] = {"query": query, "recall_mode": recall_mode}
        for key, value in (
            ("filters", filters), ("context_ref", context_ref), ("deadline_ms", deadline_ms),
            ("min_confidence", min_confidence),
        ):  # fmt: skip
            if value is not None:
                payload[key] = value
        sig = Signal(
            type=T.RECALL, trace_id=trace_id, parent_id=parent_id, directed=directed, payload=payload,
            meta=dict(meta or {}),
        )  # fmt: skip
        await core.want(T.RECALLED)
        started = anyio.current_time()
        deadline = self._engram_deadline(deadline_ms)
        answers: list[Signal] = []
        errors: dict[str, str] = {}
        with core.ops.open(sig.id, trace_id, {T.RECALLED}) as op:
            if not await core.publish_by(sig, deadline):
                raise EngramTimeout(
                    f"the recall {sig.id} was not published within its deadline (bus unreachable)"
                )
            try:
                while (reply := await op.next(deadline)) is not None:
                    who = str(reply.payload.get("engram_id") or reply.neuron or "?")
                    if reply.payload.get("error"):
                        errors[who] = str(reply.payload["error"])
                        continue
                    answers.append(reply)
                    if recall_mode == "first":
                        break
            except OpCancelled as exc:
                raise EngramCancelled(str(exc)) from None
        if not answers:
            target = directed.id or f"kind {directed.type!r}"
            if errors:
                raise EngramError(f"every engram that answered the recall failed: {errors}")
            raise EngramTimeout(f"no engram ({target}) answered the recall within {deadline - started:.3f} s")
        hits: list[Hit] = []
        for reply in answers:
            hits.extend(h for h in map(Hit.from_wire, reply.payload.get("hits") or []) if h is not None)
        if recall_mode != "first":
            hits.sort(key=lambda h: h.score, reverse=True)
        return RecallResult(
            hits=hits,
            engram_ids=[str(r.payload.get("engram_id") or r.neuron or "") for r in answers],
            truncated=any(bool(r.payload.get("truncated")) for r in answers),
            took_ms=round((anyio.current_time() - started) * 1000, 3),
            errors=errors,
        )

    async def imprint(
        self,
        *,
        engram_id: str | None = None,
        engram_kind: str | None = None,
        op: str,
        entry: dict[str, Any],
        merge_key: str | None = None,
        await_ack: bool = False,
        deadline_ms: int | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ImprintReceipt | None:
        """Write to engrams.  Returns None at once, or with ``await_ack`` the first receipt.

        The IMPRINT's id is its idempotency key: a redelivered IMPRINT writes nothing.
        Writes are journaled under the trace, so ``stop_trace(trace, rollback=True)``
        undoes them; a write for a STOPped trace is refused.
        """
        core = self._core
        core.require_running("imprint()")
        directed = _address(engram_id, engram_kind)
        if op not in IMPRINT_OPS:
            raise ValueError(f"op must be one of {sorted(IMPRINT_OPS)}, not {op!r}")
        if op in ("merge", "upsert") and not merge_key:
            raise ValueError(f"op {op!r} needs a merge_key")
        if not isinstance(entry, dict):
            raise TypeError(f"entry must be a dict, not {type(entry).__name__}")
        trace_id, parent_id = _ambient(trace_id, parent_id)
        refuse_stopped(core, trace_id, "imprint()")
        payload: dict[str, Any] = {"op": op, "entry": entry}
        if merge_key is not None:
            payload["merge_key"] = merge_key
        sig = Signal(
            type=T.IMPRINT, trace_id=trace_id, parent_id=parent_id, directed=directed, payload=payload,
            meta=dict(meta or {}),
        )  # fmt: skip
        if not await_ack:
            await core.publish(sig)
            return None
        await core.want(T.IMPRINTED)
        deadline = self._engram_deadline(deadline_ms)
        with core.ops.open(sig.id, trace_id, {T.IMPRINTED}) as pending:
            if not await core.publish_by(sig, deadline):
                raise EngramTimeout(
                    f"the imprint {sig.id} was not published within its deadline (bus unreachable)"
                )
            try:
                reply = await pending.next(deadline)
            except OpCancelled as exc:
                raise EngramCancelled(str(exc)) from None
        if reply is None:
            target = directed.id or f"kind {directed.type!r}"
            raise EngramTimeout(f"no engram ({target}) acknowledged the imprint {sig.id} in time")
        return ImprintReceipt.from_payload(reply.payload)
