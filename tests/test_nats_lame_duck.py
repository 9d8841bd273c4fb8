"""A 3-node cluster: a node entering lame-duck mode under load is left for another, nothing is lost.

Both sides know only the node that goes away; the others come from INFO
``connect_urls``.  The node is put in lame-duck mode (``nats-server --signal
ldm``) while 300 requests run: each synapse moves to another node before the
server closes it, no request is lost (none needs its retry) or delivered twice,
and the server exits on its own.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import anyio
import pytest
from nats_util import nats_server_binary, start_cluster

from cosmonapse import Signal, SignalType
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed"),
]


def sig(**payload: object) -> Signal:
    return Signal(type=SignalType.TASK, payload=dict(payload))


async def test_lame_duck_node_under_load_is_left_and_no_request_is_lost() -> None:
    conf = Path(tempfile.mkdtemp(prefix="cosmo-ldm-")) / "ldm.conf"
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "1s"\n')
    nodes = await anyio.to_thread.run_sync(lambda: start_cluster(3, extra_args=["-c", str(conf)]))
    try:
        first = nodes[0]
        attempt_timeout = 5.0  # a lost request is never answered: long enough not to mistake load for loss
        replies: dict[int, anyio.Event] = {}
        third = anyio.Event()
        done = retries = sent = doubled = 0
        handled: set[int] = set()
        moved = {"requester": anyio.Event(), "responder": anyio.Event()}
        async with NatsSynapse(first.url, name="responder") as responder:
            requester = NatsSynapse(first.url, name="requester")

            async def echo(s: Signal) -> None:
                nonlocal doubled
                if s.payload["i"] in handled and s.payload["attempt"] == 0:
                    doubled += 1
                handled.add(s.payload["i"])
                await responder.publish(f"rep.{s.payload['i']}", s)

            async def on_reply(s: Signal) -> None:
                nonlocal done, doubled
                ev = replies[s.payload["i"]]
                if ev.is_set() and s.payload["attempt"] == 0:
                    doubled += 1
                if not ev.is_set():
                    ev.set()
                    done += 1
                    if done == 100:
                        third.set()

            async def request(i: int) -> None:
                nonlocal retries
                replies[i] = anyio.Event()
                for attempt in itertools.count():
                    await requester.publish("ldm.req", sig(i=i, attempt=attempt))
                    with anyio.move_on_after(attempt_timeout):
                        await replies[i].wait()
                        return
                    retries += 1
                    assert attempt < 20, f"request {i} never answered"

            async with requester:
                requester.add_reconnect_callback(moved["requester"].set)
                responder.add_reconnect_callback(moved["responder"].set)
                assert len(requester.servers) == len(responder.servers) == 3  # learnt from connect_urls
                await responder.subscribe("ldm.req", echo, queue_group="caps:echo")
                await requester.subscribe("rep.*", on_reply)
                await responder.flush()
                await requester.flush()
                after_move = anyio.Event()

                async def client() -> None:  # requests one after another until 100 were sent after the moves
                    nonlocal sent
                    while not after_move.is_set():
                        i, sent = sent, sent + 1
                        await request(i)

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for _ in range(20):
                            tg.start_soon(client)
                        await third.wait()
                        await anyio.to_thread.run_sync(first.lame_duck)
                        for ev in moved.values():
                            await ev.wait()
                        target = sent + 100
                        while sent < target:
                            await requester.flush()
                        after_move.set()
                assert done == sent and sent > 200
                # Make before break, duplicates filed once: nothing lost (no retry), nothing doubled.
                assert retries == 0 and doubled == 0
                others = (nodes[1].url, nodes[2].url)
                assert requester.connected_url in others and responder.connected_url in others
                assert requester.lame_duck_moves == responder.lame_duck_moves == 1
                # The node goes away on its own; nobody is connected to it any more.
                assert first.proc is not None
                await anyio.to_thread.run_sync(lambda: first.proc.wait(45))  # type: ignore[union-attr]
                await requester.flush()
                await responder.flush()
                assert requester.lame_duck_moves == responder.lame_duck_moves == 1
                print(f"lame duck: {sent} requests, {retries} retried")
    finally:
        for node in nodes:
            node.stop()


async def test_tls_cluster_servers_learnt_from_connect_urls_are_used_after_a_node_dies() -> None:
    """TLS with a private CA on a 3-node cluster: a client that knows one node moves to one it learnt."""
    from nats_secure_util import Secrets

    secrets = Secrets()
    conf = secrets.write("tls-cluster.conf", secrets.tls_block() + 'authorization {\n  token: "t0k"\n}\n')
    nodes = await anyio.to_thread.run_sync(lambda: start_cluster(3, extra_args=["-c", str(conf)]))
    try:
        url = f"tls://t0k@127.0.0.1:{nodes[0].port}"
        async with NatsSynapse(url, tls=secrets.client_context()) as a:
            assert len(a.servers) == 3
            assert all(s.startswith("tls://") or s.startswith("nats://") for s in a.servers)
            reconnected = anyio.Event()
            a.add_reconnect_callback(reconnected.set)
            await anyio.to_thread.run_sync(nodes[0].kill)
            with anyio.fail_after(15):
                await reconnected.wait()
            assert a.connected_url is not None and str(nodes[0].port) not in a.connected_url
            got: list[Signal] = []
            done = anyio.Event()

            async def inbox(s: Signal) -> None:
                got.append(s)
                done.set()

            await a.subscribe("tls.cluster", inbox)
            await a.publish("tls.cluster", sig(ok=True))
            with anyio.fail_after(5):
                await done.wait()
            assert got[0].payload == {"ok": True}
    finally:
        for node in nodes:
            node.stop()


async def test_a_stream_through_a_lame_duck_move_arrives_once_each() -> None:
    """A subscriber leaves a lame-duck node while a peer on another node streams to it: no gap, no double."""
    conf = Path(tempfile.mkdtemp(prefix="cosmo-ldm-")) / "ldm.conf"
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "1s"\n')
    nodes = await anyio.to_thread.run_sync(lambda: start_cluster(3, extra_args=["-c", str(conf)]))
    try:
        counts: dict[int, int] = {}
        async with NatsSynapse(nodes[0].url) as sub, NatsSynapse(nodes[2].url) as pub:
            moved = anyio.Event()
            sub.add_reconnect_callback(moved.set)

            async def record(s: Signal) -> None:
                n = s.payload["n"]
                counts[n] = counts.get(n, 0) + 1

            await sub.subscribe("stream.x", record)
            await sub.flush()
            await pub.flush()
            total = 0
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, nodes[0].lame_duck)
                    while not moved.is_set() or total < 20_000:  # a steady stream across the move
                        for _ in range(50):
                            await pub.publish("stream.x", sig(n=total))
                            total += 1
                        await pub.flush()
                await pub.flush()
                while len(counts) < total:
                    await sub.flush()
            assert sub.lame_duck_moves == 1
            assert sorted(counts) == list(range(total))  # no gap
            assert [n for n, c in counts.items() if c != 1] == []  # no double
    finally:
        for node in nodes:
            node.stop()
