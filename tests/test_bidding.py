"""Bidding (§10): offers, bids, selection, awards, declines, and running the awarded work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from cosmonapse import (
    Axon,
    BiddingTimeout,
    Dendrite,
    DendriteProtocolError,
    Directed,
    NeuronContext,
    Signal,
    SignalType,
)
from cosmonapse.bidding import choose_bid
from cosmonapse.testing.harness import Cluster, SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType


class Runs:
    """Neurons that record which host ran them."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []

    def neuron(self, host: str) -> Any:
        async def run(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
            self.ran.append((host, ctx.neuron_id))
            return {"host": host, "input": input}

        return run


@asynccontextmanager
async def hosts(
    c: Cluster, *specs: tuple[str, str, tuple[str, ...], dict[str, Any]]
) -> AsyncIterator[list[Dendrite]]:
    """Extra worker Dendrites: (dendrite_id, neuron_id, capabilities, Dendrite kwargs)."""
    async with AsyncExitStack() as stack:
        out = []
        for name, neuron, caps, kw in specs:
            kw = dict(kw)
            fn = kw.pop("_fn", None) or _echo
            price = kw.pop("_bid", None)
            d = Dendrite(synapse=c.synapse, namespace="test", role="worker", dendrite_id=name, **kw)
            d.attach_axon(Axon(neuron_id=neuron, neuron_fn=fn, capabilities=caps))
            if price is not None:  # registered before start, so subscribed before any offer
                d.on_task_offer(_bidder(d, neuron, *price))
            out.append(await stack.enter_async_context(d))
        yield out


def _bidder(d: Dendrite, neuron: str, cost: float, confidence: float | None) -> Any:
    async def place(offer: Signal) -> None:
        await d.bid(offer, neuron=neuron, cost=cost, confidence=confidence, eta_ms=10)

    return place


async def _echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return {"echo": input, "neuron": ctx.neuron_id}


async def test_first_bid_awards_the_auto_bidder_and_the_winner_runs_it() -> None:
    runs = Runs()
    async with memory_cluster(axons=[Axon(neuron_id="solver", neuron_fn=runs.neuron("worker"),
                                          capabilities=("math",))]) as c:  # fmt: skip
        market = SignalRecorder()
        for t in (T.TASK_OFFER, T.BID, T.TASK_AWARDED, T.TASK_DECLINED):
            c.orchestrator.on_signal(t, market)
        pw = await c.orchestrator.dispatch_offer(input={"q": 1}, capabilities=["math"])
        reply = await pw.wait(5)
        await market.wait_for(count=3)
    assert reply.type is T.AGENT_OUTPUT and reply.payload["output"] == {"host": "worker", "input": {"q": 1}}
    offer, bid, award = (market.of_type(t)[0] for t in (T.TASK_OFFER, T.BID, T.TASK_AWARDED))
    assert offer.payload == {"input": {"q": 1}, "capabilities": ["math"], "deadline_ms": 250}
    assert offer.directed is None and offer.trace_id == pw.trace_id
    assert bid.parent_id == offer.id and bid.neuron == "solver" and bid.meta == {"auto_bid": True}
    assert bid.payload == {"cost": 0.0, "confidence": 1.0}
    assert award.parent_id == bid.id and award.neuron == "solver"
    assert award.payload == {"input": {"q": 1}, "winning_bid": {"cost": 0.0, "confidence": 1.0}}
    assert reply.trace_id == award.trace_id  # the local TASK (parent: the award) is never published
    assert market.of_type(T.TASK_DECLINED) == [] and runs.ran == [("worker", "solver")]


@pytest.mark.parametrize(
    ("select", "winner"), [("lowest_cost", "cheap"), ("highest_confidence", "sure"), ("first_bid", None)]
)
async def test_selection_declines_the_losers(select: str, winner: str | None) -> None:
    prices = {"cheap": (1.0, 0.5), "sure": (5.0, 0.99), "meh": (3.0, None)}
    specs = [(f"host-{n}", n, ("x",), {"_bid": price}) for n, price in prices.items()]
    async with memory_cluster() as c, hosts(c, *specs):
        market = SignalRecorder()
        c.orchestrator.on_task_awarded(market)
        c.orchestrator.on_task_declined(market)
        pw = await c.orchestrator.dispatch_offer(input={}, select=select, deadline_ms=200, scope="terminal")
        final = await pw.wait(5)
        await market.wait_for(lambda s: len(s) >= (3 if select != "first_bid" else 1))
        (award,) = market.of_type(T.TASK_AWARDED)
    assert final.type is T.FINAL  # scope="terminal" finalizes by default
    if winner is not None:
        assert award.neuron == winner and final.neuron == winner
        declined = market.of_type(T.TASK_DECLINED)
        assert sorted(d.neuron or "" for d in declined) == sorted(set(prices) - {winner})
        assert all(d.payload == {"reason": "not selected"} for d in declined)
    else:
        assert award.neuron in prices and final.neuron == award.neuron


async def test_no_bid_raises_and_publishes_nothing_more() -> None:
    async with memory_cluster() as c:
        market = SignalRecorder()
        c.orchestrator.on_task_awarded(market)
        c.orchestrator.on_task_declined(market)
        with pytest.raises(BiddingTimeout), anyio.fail_after(2):
            await c.orchestrator.dispatch_offer(input={}, capabilities=["nobody-has-it"], deadline_ms=30)
        assert c.orchestrator.open_pathways() == []
        await c.orchestrator.emit_stop(trace_id="trc_probe")  # a barrier through the bus
    assert market.signals == []


async def test_custom_offer_handler_or_auto_bid_false_suppresses_the_auto_bidder() -> None:
    async with memory_cluster() as c, hosts(
        c, ("quiet", "q", (), {"auto_bid": False}), ("custom", "cu", (), {})
    ) as (_, custom):  # fmt: skip
        offers = SignalRecorder()
        custom.on_task_offer(offers)
        with pytest.raises(BiddingTimeout):
            await c.orchestrator.dispatch_offer(input={}, deadline_ms=50, select="lowest_cost")
        await offers.wait_for(count=1)


async def test_capabilities_decide_who_bids() -> None:
    async with memory_cluster() as c, hosts(c, ("a", "na", ("english",), {}), ("b", "nb", ("french",), {})):
        pw = await c.orchestrator.dispatch_offer(input={}, capabilities=["french"], select="lowest_cost",
                                                 deadline_ms=100)  # fmt: skip
        reply = await pw.wait(5)
        assert reply.neuron == "nb"


async def test_only_the_host_whose_bid_won_runs_the_award() -> None:
    runs = Runs()
    twins = [(h, "twin", (), {"_fn": runs.neuron(h), "max_concurrent_tasks": 1}) for h in ("h1", "h2")]
    async with memory_cluster() as c, hosts(c, *twins):
        pw = await c.orchestrator.dispatch_offer(input={}, select="lowest_cost", deadline_ms=100)
        reply = await pw.wait(5)
        # A probe award nobody bid on: both hosts run it (after anything queued before it).
        probe = await c.orchestrator.observe_pathway("trc_probe")
        award = Signal(
            type=T.TASK_AWARDED, trace_id="trc_probe", directed=Directed("twin"), payload={"input": {}}
        )
        await c.synapse.publish("cosmonapse.test.TASK_AWARDED", award)
        await probe.wait(5)
        await probe.wait(5)
    assert len(runs.ran) == 3
    assert sorted(h for h, _ in runs.ran) == sorted(["h1", "h2", reply.payload["output"]["host"]])


async def test_an_award_on_a_stopped_trace_is_not_run() -> None:
    runs = Runs()
    axon = Axon(neuron_id="n", neuron_fn=runs.neuron("worker"))
    async with memory_cluster(axons=[axon], worker_kw={"max_concurrent_tasks": 1}) as c:
        seen_stop = SignalRecorder()
        c.worker.on_stop(seen_stop)
        await c.orchestrator.emit_stop(trace_id="trc_stopped")
        await seen_stop.wait_for(count=1)  # the worker has filed its tombstone
        live = await c.orchestrator.observe_pathway("trc_live")
        for trace in ("trc_stopped", "trc_live"):  # same subscription, so handled in this order
            award = Signal(type=T.TASK_AWARDED, trace_id=trace, directed=Directed("n"), payload={"input": {}})
            await c.synapse.publish("cosmonapse.test.TASK_AWARDED", award)
        reply = await live.wait(5)
    assert reply.type is T.AGENT_OUTPUT
    assert runs.ran == [("worker", "n")]  # one runner: the stopped award would have run first


async def test_guards() -> None:
    async with memory_cluster(workers={"n": _echo}) as c:
        with pytest.raises(DendriteProtocolError):
            await c.worker.dispatch_offer(input={})
        with pytest.raises(ValueError):
            await c.orchestrator.dispatch_offer(input={}, select="random")
        with pytest.raises(ValueError):
            await c.worker.bid(Signal(type=T.TASK), neuron="n", cost=1)


def test_choose_bid_ties_and_missing_values() -> None:
    def bid(cost: Any = None, confidence: Any = None) -> Signal:
        payload = {k: v for k, v in (("cost", cost), ("confidence", confidence)) if v is not None}
        return Signal(type=T.BID, payload=payload)

    a, b, c, d = bid(2, 0.5), bid(1, 0.9), bid(1, 0.9), bid()
    assert choose_bid([a, b, c, d], "lowest_cost") is b
    assert choose_bid([d, a], "lowest_cost") is a
    assert choose_bid([a, b, c, d], "highest_confidence") is b
    assert choose_bid([d, a], "highest_confidence") is a
    assert choose_bid([d, a], "first_bid") is d
