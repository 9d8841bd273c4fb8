"""The Dendrite's Engram API: hosting (attach/detach) and calling (recall/imprint) — §14.

Calls are request/reply ops correlated by the request's id, and every one has
a deadline (``Dendrite.engram_deadline_ms``, 5 s unless set): the reference
waits forever when nobody answers; here the caller gets ``EngramTimeout``.
An op is bound to its trace, so FINAL/ERROR/STOP on the trace or the Dendrite
stopping ends the wait with ``EngramCancelled``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import DendriteProtocolError
from ..ids import new_trace_id
from ..ops import OpCancelled
from ..signal import Directed, Signal, SignalType
from .base import Engram
from .errors import EngramCancelled, EngramError, EngramNotBound, EngramTimeout
from .model import IMPRINT_OPS, RECALL_MODES, Hit, ImprintReceipt, RecallResult

if TYPE_CHECKING:
    from ..dendrite import Dendrite

__all__ = ["DEFAULT_ENGRAM_DEADLINE_MS", "EngramMixin"]

log = logging.getLogger("cosmonapse.engram")
T = SignalType

#: Deadline of a recall, or an imprint that awaits its ack, when the call gives none.
DEFAULT_ENGRAM_DEADLINE_MS = 5000


def _address(engram_id: str | None, engram_kind: str | None) -> Directed:
    if not engram_id and not engram_kind:
        raise EngramNotBound("name the engram: pass engram_id= or engram_kind=")
    return Directed(engram_id or None, engram_kind or None)


def _ambient(trace_id: str | None, parent_id: str | None) -> tuple[str, str | None]:
    """Inside a running TASK: its trace and its id as parent.  Outside: explicit, else a fresh trace."""
    from ..dendrite import current_task

    task = current_task.get()
    if trace_id is None:
        trace_id = task.trace_id if task is not None else new_trace_id()
    if parent_id is None and task is not None and task.trace_id == trace_id:
        parent_id = task.id
    return trace_id, parent_id


class EngramMixin:
    """Host engrams and call them."""

    # -- hosting ---------------------------------------------------------------------
    @property
    def engrams(self: Dendrite) -> dict[str, Engram]:
        """The engrams this Dendrite hosts, by id."""
        return dict(self._engram_host.engrams)

    def attach_engram(self: Dendrite, engram: Engram) -> None:
        """Host *engram*: serve RECALL/IMPRINT for it and announce it (at once if running).

        The Dendrite does not close the engram; its owner does.
        """
        try:
            self._engram_host.add(engram)
        except ValueError as exc:
            raise DendriteProtocolError(str(exc)) from None
        if self._running:
            self._tg_start(self._announce_engram, engram)

    async def detach_engram(self: Dendrite, engram_id: str) -> None:
        """Stop hosting *engram_id* (engrams never DEREGISTER, §7.1)."""
        try:
            self._engram_host.remove(engram_id)
        except KeyError:
            raise DendriteProtocolError(f"no engram {engram_id!r} is attached") from None

    def _hosts_engrams(self: Dendrite) -> bool:
        return bool(self._engram_host)

    async def _subscribe_engram_subjects(self: Dendrite) -> None:
        if self._engram_host:
            for t in (T.RECALL, T.IMPRINT, T.FINAL, T.ERROR):
                await self._ensure_sub(self._subject(t), self._route)

    async def _announce_engram(self: Dendrite, engram: Engram) -> None:
        await self._subscribe_engram_subjects()
        await self._publish(engram.register_signal())

    async def _serve_engram_request(self: Dendrite, sig: Signal) -> None:
        host = self._engram_host
        replies = await (host.serve_recall(sig) if sig.type is T.RECALL else host.serve_imprint(sig))
        for reply in replies:
            await self._publish(reply)

    async def _commit_engrams(self: Dendrite, sig: Signal) -> None:
        await self._engram_host.commit(sig.trace_id)

    async def _settle_engrams(self: Dendrite, trace_id: str, rollback: bool) -> int:
        if not self._engram_host:
            return 0
        return await self._engram_host.settle(trace_id, rollback)

    # -- calling ---------------------------------------------------------------------
    def _engram_deadline(self: Dendrite, deadline_ms: int | None) -> float:
        ms = deadline_ms if deadline_ms is not None else self.engram_deadline_ms
        if ms is None or ms <= 0:
            raise ValueError("an engram call needs a deadline > 0 ms")
        return anyio.current_time() + ms / 1000

    async def recall(
        self: Dendrite,
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
        self._require_running("recall()")
        directed = _address(engram_id, engram_kind)
        if recall_mode not in RECALL_MODES:
            raise ValueError(f"recall_mode must be one of {sorted(RECALL_MODES)}, not {recall_mode!r}")
        if not isinstance(query, dict):
            raise TypeError(f"query must be a dict, not {type(query).__name__}")
        trace_id, parent_id = _ambient(trace_id, parent_id)
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
        await self._ensure_sub(self._subject(T.RECALLED), self._route)
        started = anyio.current_time()
        deadline = self._engram_deadline(deadline_ms)
        answers: list[Signal] = []
        errors: dict[str, str] = {}
        with self._ops.open(sig.id, trace_id, {T.RECALLED}) as op:
            await self._publish(sig)
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
        self: Dendrite,
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
        self._require_running("imprint()")
        directed = _address(engram_id, engram_kind)
        if op not in IMPRINT_OPS:
            raise ValueError(f"op must be one of {sorted(IMPRINT_OPS)}, not {op!r}")
        if op in ("merge", "upsert") and not merge_key:
            raise ValueError(f"op {op!r} needs a merge_key")
        if not isinstance(entry, dict):
            raise TypeError(f"entry must be a dict, not {type(entry).__name__}")
        trace_id, parent_id = _ambient(trace_id, parent_id)
        self._refuse_stopped(trace_id, "imprint()")
        payload: dict[str, Any] = {"op": op, "entry": entry}
        if merge_key is not None:
            payload["merge_key"] = merge_key
        sig = Signal(
            type=T.IMPRINT, trace_id=trace_id, parent_id=parent_id, directed=directed, payload=payload,
            meta=dict(meta or {}),
        )  # fmt: skip
        if not await_ack:
            await self._publish(sig)
            return None
        await self._ensure_sub(self._subject(T.IMPRINTED), self._route)
        deadline = self._engram_deadline(deadline_ms)
        with self._ops.open(sig.id, trace_id, {T.IMPRINTED}) as pending:
            await self._publish(sig)
            try:
                reply = await pending.next(deadline)
            except OpCancelled as exc:
                raise EngramCancelled(str(exc)) from None
        if reply is None:
            target = directed.id or f"kind {directed.type!r}"
            raise EngramTimeout(f"no engram ({target}) acknowledged the imprint {sig.id} in time")
        return ImprintReceipt.from_payload(reply.payload)
