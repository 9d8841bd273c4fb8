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

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from .core import Core, Route, Service
from .dispatching import request_signal, task_payload
from .errors import CosmonapseError, DendriteProtocolError
from .hosting import AxonHosting
from .pathway import Pathway, PathwayScope
from .signal import Directed, Signal, SignalType
from .stops import refuse_stopped
from .telemetry import offering

__all__ = ["SELECTIONS", "BidLedger", "Bidding", "BiddingTimeout", "choose_bid"]

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
        self.max_traces: int = max_traces
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


class Bidding(Service):
    """``dispatch_offer``, ``bid``, the auto-bidder and award execution."""

    def __init__(
        self, core: Core, hosting: AxonHosting, has_offer_handler: Callable[[], bool], *, auto_bid: bool
    ) -> None:
        self._core = core
        self._hosting = hosting
        self._has_offer_handler = has_offer_handler
        #: Bid on offers for hosted Axons unless a TASK_OFFER handler does it.
        self.auto_bid: bool = auto_bid
        self.ledger: BidLedger = BidLedger()  # bids we placed, so only the winning host runs an award

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return ((T.TASK_OFFER, self._on_task_offer), (T.TASK_AWARDED, self._on_task_awarded))

    def wanted(self) -> Iterable[SignalType]:
        wanted = []
        if self._hosting.axons:
            wanted.append(T.TASK_AWARDED)
        if self._auto_bids():
            wanted.append(T.TASK_OFFER)
        return wanted

    async def dispatch_offer(
        self,
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
        core = self._core
        core.require_orchestrator("dispatch_offer()")
        core.require_running("dispatch_offer()")
        if select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, not {select!r}")
        if deadline_ms <= 0:
            raise ValueError("deadline_ms must be > 0")
        if finalize is None:
            finalize = scope == "terminal"
        extra: dict[str, Any] = {"capabilities": list(capabilities)} if capabilities else {}
        extra["deadline_ms"] = int(deadline_ms)
        offer = request_signal(
            core, T.TASK_OFFER, input=input, payload=extra, neuron=None, trace_id=trace_id,
            parent_id=parent_id, meta=meta, what="dispatch_offer()",
        )  # fmt: skip
        await core.want_pathways()
        await core.want(T.BID)
        pw = core.open_pathway(offer.trace_id, "originator", scope)
        pw.task = offer
        try:
            with offering(offer, select, deadline_ms) as span:  # OpenTelemetry (no-op when off)
                bids = await self._collect_bids(offer, deadline_ms, select)
                span.note(**{"cosmonapse.bidding.bids": len(bids)})
                if not bids:
                    raise BiddingTimeout(
                        f"no BID for offer {offer.id} (trace {offer.trace_id}) within {deadline_ms} ms"
                    )
                winner = choose_bid(bids, select)
                span.note(
                    **{
                        "cosmonapse.bidding.winner": winner.neuron,
                        "cosmonapse.bidding.winning_bid": winner.id,
                    }
                )
                await core.publish(_award(offer, winner, context_ref, finalize))
                for bid in bids:
                    if bid is not winner:
                        await core.publish(
                            Signal(
                                type=T.TASK_DECLINED,
                                trace_id=offer.trace_id,
                                parent_id=bid.id,
                                directed=Directed(bid.neuron),
                                payload={"reason": "not selected"},
                            )
                        )
        except BaseException:
            pw._close_now()
            raise
        return pw

    async def _collect_bids(self, offer: Signal, deadline_ms: int, select: str) -> list[Signal]:
        bids: list[Signal] = []
        with self._core.ops.open(offer.id, offer.trace_id, {T.BID}, bound_to_trace=False) as op:
            await self._core.publish(offer)
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
        self,
        offer: Signal,
        *,
        neuron: str,
        cost: float,
        eta_ms: int | None = None,
        confidence: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Answer *offer* with a BID for *neuron* (any role may bid); returns the BID."""
        self._core.require_running("bid()")
        if offer.type is not T.TASK_OFFER:
            raise DendriteProtocolError(f"bid() answers a TASK_OFFER, not {offer.type.value}")
        refuse_stopped(self._core, offer.trace_id, "bid()")
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
        self.ledger.record(sig)
        await self._core.publish(sig)  # not emit(): workers may bid
        return sig

    # -- router side (no user code, no publishing inline) ------------------------------------
    def _auto_bids(self) -> bool:
        return self.auto_bid and bool(self._hosting.axons) and not self._has_offer_handler()

    async def _on_task_offer(self, offer: Signal) -> None:
        if not self._auto_bids() or offer.trace_id in self._core.tombstones:
            return
        wanted = offer.payload.get("capabilities") or []
        axon = next((a for a in self._hosting.axons.values() if a.serves(wanted)), None)
        if axon is not None:
            await self._core.run_job(self._send_auto_bid, offer, axon.neuron_id)

    async def _send_auto_bid(self, offer: Signal, neuron: str) -> None:
        if offer.trace_id in self._core.tombstones:
            return  # STOPped since the offer came
        await self.bid(offer, neuron=neuron, cost=0.0, confidence=1.0, meta={"auto_bid": True})

    async def _on_task_awarded(self, award: Signal) -> None:
        neuron = award.neuron
        axon = self._hosting.axons.get(neuron) if neuron else None
        if axon is None or award.trace_id in self._core.tombstones or not self.ledger.should_run(award):
            return
        if not self._hosting.first_run(award.id):
            return  # the same award delivered again
        payload: dict[str, Any] = {"input": award.payload.get("input") or {}}
        payload.update(
            task_payload(award.payload.get("context_ref"), None, award.payload.get("finalize") is True)
        )
        task = Signal(
            type=T.TASK,
            trace_id=award.trace_id,
            parent_id=award.id,
            directed=Directed(neuron),
            payload=payload,
        )
        await self._core.run_task(self._hosting.run, axon, task)


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
