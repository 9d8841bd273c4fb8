"""NatsSynapse against a real nats-server, on asyncio and trio."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest
from nats_util import Inbox, NatsServer, free_port, nats_server_binary

from cosmonapse import Signal, SignalType, SynapseClosedError, SynapseError
from cosmonapse.synapse.nats import NatsSynapse, PayloadTooLargeError

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with NatsServer() as srv:
        yield srv


def sig(**payload: object) -> Signal:
    return Signal(type=SignalType.TASK, payload=dict(payload))


async def test_publish_subscribe_round_trip(server: NatsServer) -> None:
    async with NatsSynapse(server.url) as a, NatsSynapse(server.url) as b:
        inbox = Inbox()
        await a.subscribe("cosmonapse.t.TASK", inbox)
        await a.flush()
        sent = [sig(i=i, text="héllo") for i in range(20)]
        for s in sent:
            await b.publish("cosmonapse.t.TASK", s)
        assert await inbox.wait_for(20) == sent
        assert a.connected_url == server.url


async def test_own_publishes_come_back_and_subscribe_orders_before_publish(server: NatsServer) -> None:
    # No flush needed: the server handles one connection's SUB before its later PUB.
    async with NatsSynapse(server.url) as a:
        inbox = Inbox()
        await a.subscribe("self.x", inbox)
        await a.publish("self.x", sig(n=1))
        assert [s.payload for s in await inbox.wait_for(1)] == [{"n": 1}]


async def test_wildcards(server: NatsServer) -> None:
    async with NatsSynapse(server.url) as a, NatsSynapse(server.url) as b:
        star, tail, exact = Inbox(), Inbox(), Inbox()
        await a.subscribe("w.*", star)
        await a.subscribe("w.>", tail)
        await a.subscribe("w.a.b", exact)
        await a.flush()
        for subject in ("w.a", "w.a.b", "x.a", "w", "w.a.b.c", "w.end"):
            await b.publish(subject, sig(subject=subject))
        # "w.end" is the last publish and matches both wildcards: once it is in, the rest is too.
        got_star = [s.payload["subject"] for s in await star.wait_for(2)]
        got_tail = [s.payload["subject"] for s in await tail.wait_for(4)]
        assert got_star == ["w.a", "w.end"]
        assert got_tail == ["w.a", "w.a.b", "w.a.b.c", "w.end"]
        assert [s.payload["subject"] for s in exact.items] == ["w.a.b"]


async def test_queue_group_gives_each_message_to_one_member(server: NatsServer) -> None:
    async with NatsSynapse(server.url) as m1, NatsSynapse(server.url) as m2, NatsSynapse(server.url) as pub:
        group, solo = Inbox(), Inbox()
        members: list[str] = []

        def member(name: str):  # type: ignore[no-untyped-def]
            async def handler(s: Signal) -> None:
                members.append(name)
                await group(s)

            return handler

        await m1.subscribe("cosmonapse.q.TASK.routed", member("m1"), queue_group="caps:echo")
        await m2.subscribe("cosmonapse.q.TASK.routed", member("m2"), queue_group="caps:echo")
        await m2.subscribe("cosmonapse.q.TASK.routed", solo)
        await m1.flush()
        await m2.flush()
        total = 200
        for i in range(total):
            await pub.publish("cosmonapse.q.TASK.routed", sig(i=i))
        assert len(await solo.wait_for(total)) == total
        assert sorted(s.payload["i"] for s in await group.wait_for(total)) == list(range(total))
        await pub.flush()
        await m1.flush()  # a duplicate would have been read by now
        await m2.flush()
        assert len(group.items) == total
        assert {"m1", "m2"} == set(members), members.count("m1")


@pytest.mark.parametrize("size", [70 * 1024, 900 * 1024])
async def test_large_payloads(server: NatsServer, size: int) -> None:
    async with NatsSynapse(server.url) as a, NatsSynapse(server.url) as b:
        inbox = Inbox()
        await a.subscribe("big", inbox)
        await a.flush()
        sent = [sig(blob="x" * size, n=1), sig(blob="y" * (size // 3), n=2), sig(n=3)]
        for s in sent:
            await b.publish("big", s)
        assert await inbox.wait_for(3) == sent


async def test_payload_over_max_payload_is_refused_and_nothing_breaks(server: NatsServer) -> None:
    async with NatsSynapse(server.url) as a:
        inbox = Inbox()
        await a.subscribe("limit", inbox)
        assert a.max_payload == 1024 * 1024  # from the server's INFO
        with pytest.raises(PayloadTooLargeError, match=r"exceeds the NATS server's max_payload of 1048576"):
            await a.publish("limit", sig(blob="z" * (1024 * 1024)))
        await a.publish("limit", sig(ok=True))
        assert [s.payload for s in await inbox.wait_for(1)] == [{"ok": True}]
        assert a.reconnects == 0


async def test_max_payload_comes_from_the_server() -> None:
    with NatsServer(max_payload=64 * 1024) as small:
        async with NatsSynapse(small.url) as a:
            assert a.max_payload == 64 * 1024
            with pytest.raises(PayloadTooLargeError, match="65536"):
                await a.publish("limit", sig(blob="z" * (70 * 1024)))
            await a.flush()


async def test_hundred_subscriptions(server: NatsServer) -> None:
    async with NatsSynapse(server.url) as a, NatsSynapse(server.url) as b:
        inboxes = [Inbox() for _ in range(100)]
        subs = [await a.subscribe(f"many.{i}", inbox) for i, inbox in enumerate(inboxes)]
        await a.flush()
        for i in range(100):
            await b.publish(f"many.{i}", sig(i=i))
        for i, inbox in enumerate(inboxes):
            assert [s.payload["i"] for s in await inbox.wait_for(1)] == [i]
        for sub in subs[::2]:
            await a.unsubscribe(sub)
        await a.flush()
        for i in range(100):
            await b.publish(f"many.{i}", sig(i=i, second=True))
        for inbox in inboxes[1::2]:
            await inbox.wait_for(2)
        await b.flush()
        await a.flush()  # any stray delivery to an unsubscribed sid would have been read by now
        assert all(len(inbox.items) == 1 for inbox in inboxes[::2])


async def test_malformed_frames_are_dropped_and_the_connection_lives_on(
    server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cosmonapse.synapse")
    async with NatsSynapse(server.url) as a, NatsSynapse(server.url) as b:
        inbox = Inbox()
        await a.subscribe("bad", inbox)
        await a.flush()
        await b.publish_bytes("bad", b"not json at all \xff")
        await b.publish_bytes("bad", b'{"type": "NOPE"}')
        await b.publish_bytes("bad", b"[1, 2]")
        await b.publish_bytes("bad", b"")
        good = sig(ok=1)
        await b.publish("bad", good)
        assert await inbox.wait_for(1) == [good]
        assert a.reconnects == 0 and a.connected_url is not None
        dropped = [r for r in caplog.records if "not a Signal" in r.getMessage()]
        assert len(dropped) == 1  # the first is reported; a flood would be summarised, not echoed
        assert a.bad_frames == 4


async def test_reader_never_waits_for_a_handler(server: NatsServer) -> None:
    """A handler blocked on one subscription does not hold up another one."""
    async with NatsSynapse(server.url) as a, NatsSynapse(server.url) as b:
        release = anyio.Event()
        blocked = anyio.Event()

        async def slow(s: Signal) -> None:
            blocked.set()
            await release.wait()

        async def fast(s: Signal) -> None:
            release.set()

        await a.subscribe("slow", slow)
        await a.subscribe("fast", fast)
        await a.flush()
        await b.publish("slow", sig())
        with anyio.fail_after(5):
            await blocked.wait()
        await b.publish("fast", sig())
        with anyio.fail_after(5):
            await release.wait()


async def test_full_buffer_backpressure_loses_nothing(server: NatsServer) -> None:
    async with NatsSynapse(server.url, subscription_buffer=2) as a, NatsSynapse(server.url) as b:
        gate = anyio.Event()
        inbox = Inbox()

        async def gated(s: Signal) -> None:
            await gate.wait()
            await inbox(s)

        await a.subscribe("bp", gated)
        await a.flush()
        for i in range(300):
            await b.publish("bp", sig(i=i))
        await b.flush()
        gate.set()
        assert [s.payload["i"] for s in await inbox.wait_for(300)] == list(range(300))


async def test_many_small_publishes_then_close_delivers_all(server: NatsServer) -> None:
    async with NatsSynapse(server.url) as a:
        inbox = Inbox()
        await a.subscribe("burst", inbox)
        await a.flush()
        b = NatsSynapse(server.url)
        await b.connect()
        async with anyio.create_task_group() as tg:
            for w in range(10):

                async def writer(w: int = w) -> None:
                    for i in range(500):
                        await b.publish("burst", sig(w=w, i=i))

                tg.start_soon(writer)
        await b.close()  # drains: everything published reaches the server
        got = await inbox.wait_for(5000)
        for w in range(10):
            assert [s.payload["i"] for s in got if s.payload["w"] == w] == list(range(500))


async def test_errors_are_clear(server: NatsServer) -> None:
    syn = NatsSynapse(server.url)
    with pytest.raises(SynapseClosedError):
        await syn.publish("x", sig())
    async with syn:
        with pytest.raises(ValueError, match="whitespace"):
            await syn.publish("a b", sig())
        with pytest.raises(ValueError, match="wildcard"):
            await syn.publish("a.*", sig())
        with pytest.raises(ValueError, match="empty token"):
            await syn.subscribe("a..b", Inbox())
        with pytest.raises(ValueError, match="queue group"):
            await syn.subscribe("a", Inbox(), queue_group="caps:a b")
        await syn.flush()  # the connection is still fine
    with pytest.raises(SynapseClosedError):
        await syn.publish("x", sig())
    with pytest.raises(SynapseError, match="could not connect to NATS"):
        async with NatsSynapse(f"nats://127.0.0.1:{free_port()}", connect_timeout=1):
            pass


async def test_authentication() -> None:
    with NatsServer(extra_args=["--user", "cosmo", "--pass", "s3cret"]) as srv:
        with pytest.raises(SynapseError, match="requires authentication"):
            async with NatsSynapse(srv.url):
                pass
        with pytest.raises(SynapseError, match="Authorization Violation"):
            async with NatsSynapse(srv.url, user="cosmo", password="wrong"):
                pass
        async with NatsSynapse(f"nats://cosmo:s3cret@127.0.0.1:{srv.port}") as a:
            inbox = Inbox()
            await a.subscribe("auth", inbox)
            await a.publish("auth", sig())
            await inbox.wait_for(1)
