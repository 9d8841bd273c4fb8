"""One subscription over several subjects: one buffer, one pump, arrival order kept, on every bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from nats_util import NatsServer

from cosmonapse import Signal, SignalType, Synapse, connect_synapse
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio
T = SignalType


@asynccontextmanager
async def bus(kind: str) -> AsyncIterator[tuple[Synapse, Synapse]]:
    """Two connections to one bus of *kind* (the same object for memory://)."""
    if kind == "memory":
        syn = await connect_synapse("memory://")
        try:
            yield syn, syn
        finally:
            await syn.close()
    elif kind == "cosmo":
        async with DevSynapseServer() as srv:
            a = await connect_synapse(srv.url)
            try:
                b = await connect_synapse(srv.url)
                try:
                    yield a, b
                finally:
                    await b.close()
            finally:
                await a.close()
    else:
        with NatsServer() as srv:
            a = await connect_synapse(srv.url)
            try:
                b = await connect_synapse(srv.url)
                try:
                    yield a, b
                finally:
                    await b.close()
            finally:
                await a.close()


@pytest.mark.parametrize("kind", ["memory", "cosmo", "nats"])
async def test_order_across_subjects_and_unsubscribe(kind: str) -> None:
    got: list[str] = []
    enough = anyio.Event()

    async def handler(sig: Signal) -> None:
        got.append(f"{sig.type.value}:{sig.payload['n']}")
        if len(got) == 60:
            enough.set()

    subjects = [f"cosmonapse.m.{t.value}" for t in (T.THOUGHT_DELTA, T.PLAN, T.AGENT_OUTPUT)]
    async with bus(kind) as (sub_side, pub_side):
        sub = await sub_side.subscribe(subjects, handler)
        assert sub.subjects == tuple(subjects)
        if hasattr(sub_side, "flush"):
            await sub_side.flush()  # NATS: the server has the SUBs before the other connection publishes
        sent = []
        for n in range(20):
            for t in (T.THOUGHT_DELTA, T.PLAN, T.AGENT_OUTPUT):
                await pub_side.publish(f"cosmonapse.m.{t.value}", Signal(type=t, payload={"n": n}))
                sent.append(f"{t.value}:{n}")
        with anyio.fail_after(10):
            await enough.wait()
        assert got == sent  # one pump: the order they were published in, across subjects

        await sub_side.unsubscribe(sub)
        if hasattr(sub_side, "flush"):
            await sub_side.flush()
        # a probe on a fresh subscription proves later Signals went nowhere near the old one
        probe = anyio.Event()

        async def on_probe(sig: Signal) -> None:
            probe.set()

        await sub_side.subscribe("cosmonapse.m.PROBE", on_probe)
        if hasattr(sub_side, "flush"):
            await sub_side.flush()
        for t in (T.THOUGHT_DELTA, T.PLAN):
            await pub_side.publish(f"cosmonapse.m.{t.value}", Signal(type=t, payload={"n": 99}))
        await pub_side.publish("cosmonapse.m.PROBE", Signal(type=T.PLAN, payload={"n": -1}))
        with anyio.fail_after(10):
            await probe.wait()
        assert len(got) == 60
