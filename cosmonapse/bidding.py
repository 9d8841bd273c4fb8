"""Competitive bidding (§10): TASK_OFFER → BID → TASK_AWARDED / TASK_DECLINED.

The orchestrator publishes an offer, collects BIDs (correlated by the offer's
id) for at most ``deadline_ms``, awards one and declines the rest; the Dendrite
that placed the winning bid runs the work as if it had received a TASK (a
local TASK whose parent is the award, never published).  Hosts with Axons bid
automatically unless they registered their own TASK_OFFER handler or were
built with ``auto_bid=False``.

Unlike the reference, when several Dendrites host the same neuron id only the
one whose bid won runs the award: a host that bid on the trace and lost stays
idle.  A host that did not bid at all (someone bid for it) still runs it.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio

from .errors import CosmonapseError
from .ids import new_trace_id
from .signal import Directed, Signal, SignalType

if TYPE_CHECKING:
    from .axon import Axon
    from .dendrite import Dendrite
    from .pathway import Pathway, PathwayScope

__all__ = ["SELECTIONS", "BidLedger", "BiddingMixin", "BiddingTimeout", "choose_bid"]

T = SignalType
SELECTIONS = ("first_bid", "lowest_cost", "highest_confidence")
#: Traces whose bids a Dendrite remembers (to know whether an award is its own).
MAX_REMEMBERED_BID_TRACES = 4096


class BiddingTimeout(CosmonapseError, TimeoutError):
    """No BID arrived within the offer's deadline; nothing was awarded or declined."""


def _number(value: Any, missing: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return missing
    return float(value)


def choose_bid(bids: list[Signal], select: str) -> Signal:
    """The winning bid; ties go to the earliest arrival."""
    if select == "first_bid":
        return bids[0]
    if select == "lowest_cost":
        return min(bids, key=lambda b: _number(b.payload.get("cost"), math.inf))
    if select == "highest_confidence":
        best = bids[0]
        for bid in bids[1:]:
            if _number(bid.payload.get("confidence"), -math.inf) > _number(
                best.payload.get("confidence"), -math.inf
            ):
                best = bid
        return best
    raise ValueError(f"select must be one of {SELECTIONS}, not {select!r}")


class BidLedger:
    """The bids this Dendrite placed, by trace: bounded, oldest trace forgotten first."""

    __slots__ = ("_by_trace", "max_traces")

    def __init__(self, max_traces: int = MAX_REMEMBERED_BID_TRACES) -> None:
        self.max_traces = max_traces
        self._by_trace: OrderedDict[str, set[str]] = OrderedDict()

    def record(self, bid: Signal) -> None:
        self._by_trace.setdefault(bid.trace_id, set()).add(bid.id)
        self._by_trace.move_to_end(bid.trace_id)
        while len(self._by_trace) > self.max_traces:
            self._by_trace.popitem(last=False)

    def should_run(self, award: Signal) -> bool:
        """Ours if it awards one of our bids; not ours if we bid on the trace and lost."""
        mine = self._by_trace.get(award.trace_id)
        if mine is None:
            return True  # we did not bid: someone bid for a neuron we host
        return award.parent_id in mine


class BiddingMixin:
    """``dispatch_offer``, ``bid``, the auto-bidder and award execution."""

    async def dispatch_offer(
        self: Dendrite,
        *,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        deadline_ms: int = 250,
        select: str = "first_bid",
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        context_ref: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Pathway:
        """Offer work, award it to the best bid within *deadline_ms*; returns the trace's Pathway.

        ``first_bid`` awards at the first BID; ``lowest_cost`` and
        ``highest_confidence`` wait the whole window.  Raises ``BiddingTimeout``
        when nobody bids in time.
        """
        from .dendrite import current_task

        self._require_orchestrator("dispatch_offer()")
        self._require_running("dispatch_offer()")
        if select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, not {select!r}")
        if deadline_ms <= 0:
            raise ValueError("deadline_ms must be > 0")
        if not isinstance(input, dict):
            raise TypeError(f"input must be a dict, got {type(input).__name__}")
        if finalize is None:
            finalize = scope == "terminal"
        trace_id = trace_id or new_trace_id()
        self._refuse_stopped(trace_id, "dispatch_offer()")
        if parent_id is None and (ambient := current_task.get()) is not None:
            parent_id = ambient.id
        payload: dict[str, Any] = {"input": input}
        if capabilities:
            payload["capabilities"] = list(capabilities)
        payload["deadline_ms"] = int(deadline_ms)
        offer = Signal(
            type=T.TASK_OFFER, trace_id=trace_id, parent_id=parent_id, payload=payload, meta=dict(meta or {})
        )
        await self._ensure_pathway_subscriptions()
        await self._ensure_sub(self._subject(T.BID), self._route)
        pw = self._open_pathway(trace_id, "originator", scope)
        pw.task = offer
        try:
            bids = await self._collect_bids(offer, deadline_ms, select)
            if not bids:
                raise BiddingTimeout(
                    f"no BID for offer {offer.id} (trace {trace_id}) within {deadline_ms} ms"
                )
            winner = choose_bid(bids, select)
            await self._publish(_award(offer, winner, context_ref, finalize))
            for bid in bids:
                if bid is not winner:
                    await self._publish(
                        Signal(
                            type=T.TASK_DECLINED,
                            trace_id=trace_id,
                            parent_id=bid.id,
                            directed=Directed(bid.neuron),
                            payload={"reason": "not selected"},
                        )
                    )
        except BaseException:
            pw._close_now()
            raise
        return pw

    async def _collect_bids(self: Dendrite, offer: Signal, deadline_ms: int, select: str) -> list[Signal]:
        bids: list[Signal] = []
        with self._ops.open(offer.id, offer.trace_id, {T.BID}, bound_to_trace=False) as op:
            await self._publish(offer)
            deadline = anyio.current_time() + deadline_ms / 1000
            while (bid := await op.next(deadline)) is not None:
                if not bid.neuron:
                    continue  # a bid must name the neuron that would do the work
                bids.append(bid)
                if select == "first_bid":
                    bids.extend(b for b in op.take_all() if b.neuron)
                    break
        return bids

    async def bid(
        self: Dendrite,
        offer: Signal,
        *,
        neuron: str,
        cost: float,
        eta_ms: int | None = None,
        confidence: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Answer *offer* with a BID for *neuron* (any role may bid); returns the BID."""
        self._require_running("bid()")
        if offer.type is not T.TASK_OFFER:
            raise ValueError(f"bid() answers a TASK_OFFER, not {offer.type.value}")
        payload: dict[str, Any] = {"cost": float(cost)}
        if eta_ms is not None:
            payload["eta_ms"] = int(eta_ms)
        if confidence is not None:
            payload["confidence"] = float(confidence)
        sig = Signal(
            type=T.BID,
            trace_id=offer.trace_id,
            parent_id=offer.id,
            directed=Directed(neuron),
            payload=payload,
            meta=dict(meta or {}),
        )
        self._bids.record(sig)
        await self._publish(sig)  # the private path: workers may bid
        return sig

    # -- router side (no user code, no publishing inline) ------------------------------------
    def _auto_bids(self: Dendrite) -> bool:
        return self.auto_bid and bool(self._axons) and not self._handlers.has(T.TASK_OFFER)

    async def _subscribe_bidding(self: Dendrite) -> None:
        if self._auto_bids():
            await self._ensure_sub(self._subject(T.TASK_OFFER), self._route)

    async def _on_task_offer(self: Dendrite, offer: Signal) -> None:
        if not self._auto_bids() or offer.trace_id in self._stops:
            return
        wanted = offer.payload.get("capabilities") or []
        axon = next((a for a in self._axons.values() if a.serves(wanted)), None)
        if axon is not None:
            await self._start_internal(functools.partial(self._send_auto_bid, neuron=axon.neuron_id), offer)

    async def _send_auto_bid(self: Dendrite, offer: Signal, *, neuron: str) -> None:
        await self.bid(offer, neuron=neuron, cost=0.0, confidence=1.0, meta={"auto_bid": True})

    async def _on_task_awarded(self: Dendrite, award: Signal) -> None:
        neuron = award.neuron
        axon: Axon | None = self._axons.get(neuron) if neuron else None
        if axon is None or award.trace_id in self._stops or not self._bids.should_run(award):
            return
        payload: dict[str, Any] = {"input": award.payload.get("input") or {}}
        if award.payload.get("context_ref"):
            payload["context_ref"] = award.payload["context_ref"]
        if award.payload.get("finalize") is True:
            payload["finalize"] = True
        task = Signal(
            type=T.TASK,
            trace_id=award.trace_id,
            parent_id=award.id,
            directed=Directed(neuron),
            payload=payload,
        )
        await self._start_task(axon, task)


def _award(offer: Signal, winner: Signal, context_ref: str | None, finalize: bool) -> Signal:
    winning = {k: winner.payload[k] for k in ("cost", "eta_ms", "confidence") if k in winner.payload}
    payload: dict[str, Any] = {"input": offer.payload["input"], "winning_bid": winning}
    if context_ref is not None:
        payload["context_ref"] = context_ref
    if finalize:
        payload["finalize"] = True
    return Signal(
        type=T.TASK_AWARDED,
        trace_id=offer.trace_id,
        parent_id=winner.id,
        directed=Directed(winner.neuron),
        payload=payload,
    )
