"""DevSynapse (the cosmo:// client) and connect_synapse."""

from __future__ import annotations

import importlib.resources
import logging

import anyio
import orjson
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from devbus_util import RawClient, ServerInTask

from cosmonapse import DevSynapse, MemorySynapse, Signal, SignalType, connect_synapse, encode_signal
from cosmonapse.codec import signal_to_dict
from cosmonapse.errors import SynapseClosedError, SynapseError
from cosmonapse.synapse.connect import _nats_servers, make_synapse
from cosmonapse.synapse.dev import parse_cosmo_url
from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.testing.harness import running_task_names

pytestmark = pytest.mark.anyio


def task(n: int = 0, **payload: object) -> Signal:
    return Signal(type=SignalType.TASK, trace_id="trc_client", payload={"n": n, **payload})


def collector(send: MemoryObjectSendStream[Signal]):  # type: ignore[no-untyped-def]
    async def handler(sig: Signal) -> None:
        await send.send(sig)

    return handler


async def test_publish_subscribe_round_trip() -> None:
    send, receive = anyio.create_memory_object_stream[Signal](100)
    async with DevSynapseServer() as srv:
        sub_side = await connect_synapse(srv.url)
        try:
            pub_side = await connect_synapse(srv.url)
            try:
                assert isinstance(sub_side, DevSynapse)
                await sub_side.subscribe("cosmonapse.rt.TASK", collector(send))
                await sub_side.publish("cosmonapse.rt.TASK", task(-1))  # same connection, after the sub
                with anyio.fail_after(10):
                    assert (await receive.receive()).payload["n"] == -1  # so the sub is in place
                await pub_side.publish("cosmonapse.rt.TASK", task(1, text="héllo\n"))
                with anyio.fail_after(10):
                    second = await receive.receive()
                assert second.payload == {"n": 1, "text": "héllo\n"}
            finally:
                await pub_side.close()
        finally:
            await sub_side.close()


async def test_queue_groups_and_unsubscribe_through_the_client() -> None:
    send, receive = anyio.create_memory_object_stream[tuple[str, int]](100)

    def tagged(tag: str):  # type: ignore[no-untyped-def]
        async def handler(sig: Signal) -> None:
            await send.send((tag, sig.payload["n"]))

        return handler

    async with DevSynapseServer() as srv, DevSynapse(srv.url) as syn:
        subj = "cosmonapse.g.TASK.routed"
        await syn.subscribe(subj, tagged("a"), queue_group="caps:x")
        await syn.subscribe(subj, tagged("b"), queue_group="caps:x")
        watcher = await syn.subscribe("cosmonapse.g.>", tagged("w"))
        for n in range(4):
            await syn.publish(subj, task(n))
        with anyio.fail_after(10):
            got = [await receive.receive() for _ in range(8)]
        assert sorted(n for tag, n in got if tag == "w") == [0, 1, 2, 3]
        assert sorted(tag for tag, _ in got if tag != "w") == ["a", "a", "b", "b"]
        await syn.unsubscribe(watcher)
        await syn.publish(subj, task(9))
        with anyio.fail_after(10):
            tag, n = await receive.receive()
        assert (tag, n) in {("a", 9), ("b", 9)}
        await syn.publish(subj, task(10))
        with anyio.fail_after(10):
            assert (await receive.receive())[0] != "w"


async def test_frames_over_64_kib_and_golden_vectors_round_trip() -> None:
    lines = (
        importlib.resources.files("cosmonapse.testing")
        .joinpath("vectors/valid.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    frames = [orjson.loads(line) for line in lines if line.strip()]
    send, receive = anyio.create_memory_object_stream[Signal](100)
    async with DevSynapseServer() as srv, DevSynapse(srv.url) as syn:
        await syn.subscribe("cosmonapse.v.>", collector(send))
        big = task(1, blob="q" * 70 * 1024)
        await syn.publish("cosmonapse.v.TASK", big)
        with anyio.fail_after(10):
            assert (await receive.receive()).payload == big.payload
        from cosmonapse.codec import signal_from_dict

        for raw in frames:
            await syn.publish(f"cosmonapse.v.{raw['type']}", signal_from_dict(raw))
        with anyio.fail_after(10):
            for raw in frames:
                got = await receive.receive()
                assert signal_to_dict(got) == raw


async def test_bad_frames_are_dropped_and_the_reader_survives(caplog: pytest.LogCaptureFixture) -> None:
    send, receive = anyio.create_memory_object_stream[Signal](100)
    good = encode_signal(task(7)).decode()
    async with (
        DevSynapseServer() as srv,
        DevSynapse(srv.url) as syn,
        await RawClient.connect(srv.port) as raw,
    ):
        await syn.subscribe("cosmonapse.bad.TASK", collector(send))
        await syn.publish("cosmonapse.bad.TASK", task(0))  # barrier
        with anyio.fail_after(10):
            await receive.receive()
        with caplog.at_level(logging.WARNING, logger="cosmonapse.synapse"):
            await raw.pub("cosmonapse.bad.TASK", "not json at all")
            await raw.pub("cosmonapse.bad.TASK", '{"type":"NOPE"}')
            await raw.pub("cosmonapse.bad.TASK", {"type": "TASK"})  # not a string
            await raw.pub("cosmonapse.bad.TASK", good)
            with anyio.fail_after(10):
                assert (await receive.receive()).payload["n"] == 7
        dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 1  # the first is reported; a flood would be summarised, not echoed
        assert syn.bad_frames == 3


async def test_reconnect_restores_subscriptions_and_calls_back() -> None:
    send, receive = anyio.create_memory_object_stream[Signal](100)
    reconnected = anyio.Event()
    async with anyio.create_task_group() as tg:
        bus = ServerInTask(tg)
        srv = await bus.start()
        async with DevSynapse(srv.url, reconnect_delay=0.01, publish_timeout=10) as syn:
            syn.add_reconnect_callback(reconnected.set)
            await syn.subscribe("cosmonapse.r.TASK", collector(send))
            await syn.subscribe("cosmonapse.r.>", collector(send), queue_group="caps:r")
            await bus.stop()

            # Publishing during the outage waits for the new server (bounded by publish_timeout).
            async with anyio.create_task_group() as publishers:
                publishers.start_soon(syn.publish, "cosmonapse.r.TASK", task(1))
                srv = await bus.start(port=srv.port)
            with anyio.fail_after(10):
                await reconnected.wait()
                got = [await receive.receive(), await receive.receive()]
            assert [s.payload["n"] for s in got] == [1, 1]
            assert syn.reconnects == 1
            assert srv.stats.connections_open == 1
        await bus.stop()


async def test_publish_during_an_outage_times_out_clearly() -> None:
    async with anyio.create_task_group() as tg:
        bus = ServerInTask(tg)
        srv = await bus.start()
        syn = DevSynapse(srv.url, publish_timeout=0.2, reconnect_delay=0.01)
        await syn.connect()
        try:
            await bus.stop()
            with anyio.fail_after(10), pytest.raises(SynapseError, match=r"unreachable for 0\.2s"):
                while True:  # the first publishes may still find the dying socket writable
                    await syn.publish("cosmonapse.x.TASK", task())
        finally:
            await syn.close()
    with pytest.raises(SynapseClosedError):
        await syn.publish("cosmonapse.x.TASK", task())


async def test_reconnect_off_leaves_publish_failing() -> None:
    async with anyio.create_task_group() as tg:
        bus = ServerInTask(tg)
        srv = await bus.start()
        async with DevSynapse(srv.url, reconnect=False, publish_timeout=0.2) as syn:
            await bus.stop()
            with anyio.fail_after(10), pytest.raises(SynapseError):
                while True:
                    await syn.publish("cosmonapse.x.TASK", task())


async def test_connect_errors_are_clear() -> None:
    async with DevSynapseServer() as srv:
        port = srv.port
    with pytest.raises(SynapseError, match=rf"cannot reach dev bus cosmo://127.0.0.1:{port}"):
        await connect_synapse(f"cosmo://127.0.0.1:{port}", connect_timeout=2)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:

        async def not_a_bus(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                await stream.send(b"INFO {}\r\n")

        tg.start_soon(listener.serve, not_a_bus)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with pytest.raises(SynapseError, match=r"not a cosmo dev bus|not JSON"):
            await connect_synapse(f"cosmo://127.0.0.1:{port}")
        tg.cancel_scope.cancel()


async def test_connect_synapse_schemes() -> None:
    mem = await connect_synapse("memory://")
    try:
        assert isinstance(mem, MemorySynapse)
        assert mem.connected
    finally:
        await mem.close()
    for bad in ("kafka://localhost:9092", "http://x", "cosmo", "", "127.0.0.1:7070"):
        with pytest.raises(ValueError, match="synapse URL"):
            await connect_synapse(bad)


def test_url_parsing() -> None:
    assert parse_cosmo_url("cosmo://127.0.0.1") == ("127.0.0.1", 7070, None)
    assert parse_cosmo_url("cosmo://example.org:7171/ns?token=abc") == ("example.org", 7171, "abc")
    assert parse_cosmo_url("cosmo://[::1]:9") == ("::1", 9, None)
    assert DevSynapse("cosmo://[::1]:9").url == "cosmo://[::1]:9"
    assert DevSynapse("cosmo://h?token=t").token == "t"
    with pytest.raises(ValueError, match="bad port"):
        parse_cosmo_url("cosmo://h:99999")
    with pytest.raises(ValueError, match="not a cosmo:// URL"):
        DevSynapse("nats://h:1")
    assert _nats_servers("nats://a:1,b:2") == ["nats://a:1", "nats://b:2"]
    assert _nats_servers("nats://a:1,nats://b:2/") == ["nats://a:1", "nats://b:2"]
    with pytest.raises(ValueError, match="empty server"):
        _nats_servers("nats://a:1,,b:2")
    assert isinstance(make_synapse("cosmo://h:1", publish_timeout=1.0), DevSynapse)


async def test_subscribe_returns_once_the_bus_has_the_subscription() -> None:
    """No barrier needed: a publish from another connection right after subscribe() arrives."""
    send, receive = anyio.create_memory_object_stream[Signal](100)
    async with DevSynapseServer() as srv, DevSynapse(srv.url) as a, DevSynapse(srv.url) as b:
        for n in range(20):
            await a.subscribe(f"cosmonapse.sync.T{n}", collector(send))
            await b.publish(f"cosmonapse.sync.T{n}", task(n))
            with anyio.fail_after(10):
                assert (await receive.receive()).payload["n"] == n


async def test_close_flushes_what_was_published_and_leaves_no_task() -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as observer:
        await observer.sub("o", "cosmonapse.flush.>")
        await observer.sync()
        before = set(running_task_names())
        syn = DevSynapse(srv.url)
        await syn.connect()
        for n in range(500):
            await syn.publish("cosmonapse.flush.TASK", task(n))
        await syn.close()
        left = {name for tid, name in running_task_names().items() if tid not in before}
        assert not {
            name for name in left if not name.startswith("dev-bus")
        }  # the bus may still be hanging up
        got = [orjson.loads((await observer.recv())["frame"])["payload"]["n"] for _ in range(500)]
        assert got == list(range(500))


async def test_publish_raises_when_the_bus_stops_reading() -> None:
    """A bus that accepts but never reads: the outbox fills and publish fails within publish_timeout."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    stuck = anyio.Event()

    async def mute_bus(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b'{"op":"welcome"}\n')
            await stream.receive()  # the handshake ping
            await stream.send(b'{"op":"pong"}\n')
            await stuck.wait()  # and never read again

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, mute_bus)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with DevSynapse(f"cosmo://127.0.0.1:{port}", publish_timeout=0.3, outbox_size=2) as syn:
            big = task(0, blob="b" * 1024 * 1024)
            with anyio.fail_after(60), pytest.raises(SynapseError, match="outbox full"):
                while True:
                    await syn.publish("cosmonapse.mute.TASK", big)
            stuck.set()
        tg.cancel_scope.cancel()


async def test_close_then_connect_again_does_not_restore_dead_subscriptions() -> None:
    """A queue-group member that ended with close() must not keep its turn after a new connect()."""
    got: list[int] = []
    all_in = anyio.Event()

    async def handler(sig: Signal) -> None:
        got.append(sig.payload["n"])
        if len(got) == 6:
            all_in.set()

    async with DevSynapseServer() as srv:
        client = await connect_synapse(srv.url)
        await client.subscribe("cosmonapse.q.TASK", handler, queue_group="g")
        await client.close()
        await client.connect()
        try:
            await client.subscribe("cosmonapse.q.TASK", handler, queue_group="g")
            for n in range(6):
                await client.publish("cosmonapse.q.TASK", task(n))
            with anyio.fail_after(10):
                await all_in.wait()
        finally:
            await client.close()
    assert sorted(got) == list(range(6))
