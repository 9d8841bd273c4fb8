"""NatsSynapse through server restarts, outages and a 3-node cluster losing a node."""

from __future__ import annotations

import itertools

import anyio
import anyio.abc
import pytest
from nats_util import Inbox, NatsServer, nats_server_binary, start_cluster

from cosmonapse import Signal, SignalType, SynapseError, connect_synapse
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed"),
]


def sig(**payload: object) -> Signal:
    return Signal(type=SignalType.TASK, payload=dict(payload))


class Reconnected:
    """A reconnect callback the test can await."""

    def __init__(self) -> None:
        self.count = 0
        self.event = anyio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def wait(self) -> None:
        with anyio.fail_after(10):
            await self.event.wait()
        self.event = anyio.Event()


async def lost(syn: NatsSynapse) -> None:
    """Return once *syn* has noticed its connection is gone (a flush cannot succeed)."""
    with anyio.fail_after(10):
        while syn.connected_url is not None:
            try:
                await syn.flush()  # fails as soon as the reader sees the connection close
            except SynapseError:
                pass


async def test_restart_on_same_port_restores_subscriptions() -> None:
    with NatsServer() as srv:
        async with NatsSynapse(srv.url) as a, NatsSynapse(srv.url, publish_timeout=0.2) as b:
            inbox = Inbox()
            await a.subscribe("r.x", inbox, queue_group="caps:r")
            await a.subscribe("r.*", inbox)
            on_a, on_b = Reconnected(), Reconnected()
            a.add_reconnect_callback(on_a)
            b.add_reconnect_callback(on_b)

            await anyio.to_thread.run_sync(srv.kill)
            await lost(b)
            with pytest.raises(SynapseError, match=r"not sent after 0.2s: not connected to NATS"):
                await b.publish("r.x", sig(lost=True))
            await anyio.to_thread.run_sync(srv.start)
            await on_a.wait()
            await on_b.wait()
            assert (a.reconnects, b.reconnects) == (1, 1)
            assert a.connected_url == srv.url

            await b.publish("r.x", sig(n=1))
            assert [s.payload for s in await inbox.wait_for(2)] == [{"n": 1}, {"n": 1}]  # one per sub


async def test_publish_during_outage_is_sent_after_the_reconnect() -> None:
    with NatsServer() as srv:
        async with NatsSynapse(srv.url, publish_timeout=10) as a:
            inbox = Inbox()
            await a.subscribe("o.x", inbox)
            on_a = Reconnected()
            a.add_reconnect_callback(on_a)
            await anyio.to_thread.run_sync(srv.kill)
            await lost(a)
            published = anyio.Event()

            async def publish() -> None:
                await a.publish("o.x", sig(parked=True))  # waits for the reconnect
                published.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish)
                await anyio.wait_all_tasks_blocked()
                assert not published.is_set()
                await anyio.to_thread.run_sync(srv.start)
                await on_a.wait()
            # The handshake re-subscribed before the parked publish went out.
            assert [s.payload for s in await inbox.wait_for(1)] == [{"parked": True}]


async def test_gives_up_after_max_reconnect_attempts() -> None:
    with NatsServer() as srv:
        async with NatsSynapse(srv.url, max_reconnect_attempts=3, reconnect_wait=0.01) as a:
            await anyio.to_thread.run_sync(srv.kill)
            with anyio.fail_after(10):
                while True:
                    try:
                        await a.flush()
                    except SynapseError as exc:
                        if "gave up" in str(exc):
                            break
            with pytest.raises(SynapseError, match="gave up reconnecting to NATS after 3 attempts"):
                await a.publish("g.x", sig())


@pytest.mark.slow
async def test_cluster_node_loss_loses_no_retried_request() -> None:
    """Requests through a 3-node cluster; the node both sides use dies mid-run; every request completes."""
    nodes = await anyio.to_thread.run_sync(start_cluster, 3)
    try:
        urls = ",".join(n.url for n in nodes)
        # The responder knows one node; it learns the others from INFO connect_urls.
        responder = NatsSynapse(nodes[0].url, name="responder")
        requester = await connect_synapse(f"nats://{urls.replace('nats://', '')}", name="requester")
        assert isinstance(requester, NatsSynapse)
        total, attempt_timeout = 200, 1.0
        replies: dict[int, anyio.Event] = {i: anyio.Event() for i in range(total)}
        halfway = anyio.Event()
        done = 0
        retries = 0
        on_req, on_resp = Reconnected(), Reconnected()

        async def echo(s: Signal) -> None:
            await responder.publish(f"rep.{s.payload['i']}", s)

        async def on_reply(s: Signal) -> None:
            nonlocal done
            ev = replies[s.payload["i"]]
            if not ev.is_set():
                ev.set()
                done += 1
                if done == total // 3:
                    halfway.set()

        async def request(i: int) -> None:
            nonlocal retries
            for attempt in itertools.count():
                await requester.publish("req.echo", sig(i=i, attempt=attempt))
                with anyio.move_on_after(attempt_timeout):
                    await replies[i].wait()
                    return
                retries += 1
                assert attempt < 20, f"request {i} never answered"

        try:
            async with responder:
                responder.add_reconnect_callback(on_resp)
                requester.add_reconnect_callback(on_req)
                assert responder.connected_url == requester.connected_url == nodes[0].url
                assert len(requester.servers) == len(responder.servers) == 3
                await responder.subscribe("req.echo", echo, queue_group="caps:echo")
                await requester.subscribe("rep.*", on_reply)
                await responder.flush()
                await requester.flush()
                limiter = anyio.Semaphore(20)

                async def limited(i: int) -> None:
                    async with limiter:
                        await request(i)

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for i in range(total):
                            tg.start_soon(limited, i)
                        await halfway.wait()
                        await anyio.to_thread.run_sync(nodes[0].kill)
                        await on_req.wait()
                        await on_resp.wait()
                assert done == total
                assert requester.connected_url in (nodes[1].url, nodes[2].url)
                assert responder.connected_url in (nodes[1].url, nodes[2].url)
                print(f"cluster: {total} requests, {retries} retried after the node loss")
        finally:
            await requester.close()
    finally:
        for node in nodes:
            node.stop()


class FakeServer:
    """A loopback listener that speaks just enough NATS to misbehave on purpose."""

    def __init__(self, after_handshake: bytes | None) -> None:
        self.after_handshake = after_handshake  # None: go silent (no PONGs)
        self.connections = 0
        self.answer = b""
        self.answered = anyio.Event()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            await stream.send(b'INFO {"server_id":"fake","max_payload":1048576}\r\n')
            seen = b""
            while b"PING\r\n" not in seen:
                seen += await stream.receive()
            await stream.send(b"PONG\r\n")
            if self.after_handshake is not None and self.connections == 1:
                await stream.receive()  # the client's first frame after the handshake
                await stream.send(self.after_handshake)
                if self.after_handshake == b"PING\r\n":
                    self.answer = await stream.receive()
                    self.answered.set()
            try:
                while True:
                    await stream.receive()  # read and ignore: no PONG ever again
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass


async def test_silent_server_is_detected_by_pings_and_left() -> None:
    fake = FakeServer(after_handshake=None)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, fake.handle)
            async with NatsSynapse(f"nats://127.0.0.1:{port}", ping_interval=0.02, drain_timeout=0.1) as syn:
                on = Reconnected()
                syn.add_reconnect_callback(on)
                await on.wait()
                assert "stale connection: 2 PINGs without a PONG" in str(syn.last_error)
            tg.cancel_scope.cancel()


async def test_protocol_garbage_drops_the_connection_and_reconnects() -> None:
    fake = FakeServer(after_handshake=b"BOGUS nonsense\r\n")
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, fake.handle)
            async with NatsSynapse(f"nats://127.0.0.1:{port}", ping_interval=0, drain_timeout=0.1) as syn:
                on = Reconnected()
                syn.add_reconnect_callback(on)
                await syn.publish("x", sig())
                await on.wait()
                assert "unknown operation" in str(syn.last_error)
                assert fake.connections == 2
            tg.cancel_scope.cancel()


async def test_a_reader_held_up_by_backpressure_is_not_taken_for_a_dead_server() -> None:
    with NatsServer() as srv:
        async with NatsSynapse(srv.url, subscription_buffer=1, ping_interval=0.02) as a:
            inbox = Inbox()

            async def slow(s: Signal) -> None:
                await anyio.sleep(0.05)  # allowed: slow work: 5 messages keep the reader waiting ~10 pings
                await inbox(s)

            await a.subscribe("slow", slow)
            for i in range(5):
                await a.publish("slow", sig(i=i))
            assert [s.payload["i"] for s in await inbox.wait_for(5)] == list(range(5))
            await a.flush()
            assert a.reconnects == 0, a.last_error


async def test_server_ping_is_answered() -> None:
    fake = FakeServer(after_handshake=b"PING\r\n")
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, fake.handle)
            async with NatsSynapse(f"nats://127.0.0.1:{port}", ping_interval=0, drain_timeout=0.1) as syn:
                await syn.publish("x", sig())
                with anyio.fail_after(5):
                    await fake.answered.wait()
                assert fake.answer == b"PONG\r\n"
            tg.cancel_scope.cancel()
