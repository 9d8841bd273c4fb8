"""Dev bus extensions: slow-consumer policy and the token handshake."""

from __future__ import annotations

import logging
import time

import anyio
import orjson
import pytest
from devbus_util import RawClient

from cosmonapse import Signal, SignalType
from cosmonapse.errors import SynapseError
from cosmonapse.synapse.dev import DevSynapse
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_frozen_subscriber_neither_stalls_others_nor_stays_connected() -> None:
    """A subscriber that never reads is cut off; a live one keeps low latency meanwhile."""
    count, blob = 300, "z" * 64 * 1024
    latencies: list[float] = []
    async with (
        DevSynapseServer(outbox_size=16, outbox_bytes=2 * 1024 * 1024) as srv,
        await RawClient.connect(srv.port) as frozen,
        await RawClient.connect(srv.port) as live,
        await RawClient.connect(srv.port) as pub,
    ):
        await frozen.sub("f", "cosmonapse.load.TASK")
        await live.sub("l", "cosmonapse.load.TASK")
        await frozen.sync()
        await live.sync()

        async def read_live() -> None:
            for _ in range(count):
                got = await live.recv()
                sent = orjson.loads(got["frame"])["sent"]
                latencies.append(time.monotonic() - sent)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_live)
                for _ in range(count):
                    frame = orjson.dumps({"sent": time.monotonic(), "blob": blob}).decode()
                    await pub.pub("cosmonapse.load.TASK", frame)
                await pub.sync()  # the publisher was never held up by the frozen one

        assert len(latencies) == count
        assert max(latencies) < 2.0, max(latencies)
        assert sorted(latencies)[count // 2] < 0.5
        # The frozen one was dropped: reading now drains what the kernel held, then EOF.
        lines = await frozen.at_eof(deadline=30)
        delivered = [line for line in lines if line.startswith(b'{"op":"msg"')]
        assert len(delivered) < count
        assert srv.stats.slow_consumer_disconnects == 1
        assert srv.stats.connections_open == 2


async def test_token_accepted() -> None:
    async with DevSynapseServer(token="s3cret") as srv, await RawClient.connect(srv.port) as c:
        await c.send({"op": "auth", "token": "s3cret"})
        assert await c.recv_raw() == b'{"op":"auth_ok"}'
        await c.sync()
        await c.sub("s", "a")
        await c.pub("a", "f")
        assert (await c.recv())["frame"] == "f"


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b'{"op":"ping"}', "auth required"),
        (b'{"op":"sub","sub_id":"s","subject":">"}', "auth required"),
        (b'{"op":"auth","token":"wrong"}', "auth: bad token"),
        (b'{"op":"auth"}', "auth: bad token"),
        (b'{"op":"auth","token":5}', "auth: bad token"),
        (b"not json", "auth required; bad JSON"),
    ],
)
async def test_token_refused_closes_the_connection(first: bytes, message: str) -> None:
    async with DevSynapseServer(token="s3cret") as srv, await RawClient.connect(srv.port) as c:
        await c.send_raw(first + b'\n{"op":"ping"}\n')
        lines = await c.at_eof()
        assert len(lines) == 1  # the err, and no pong
        answer = orjson.loads(lines[0])
        assert answer["op"] == "err"
        assert answer["message"].startswith(message)
        assert srv.stats.auth_failures == 1


async def test_refused_connection_gets_nothing_published() -> None:
    async with (
        DevSynapseServer(token="t") as srv,
        await RawClient.connect(srv.port) as intruder,
        await RawClient.connect(srv.port) as member,
    ):
        await member.send({"op": "auth", "token": "t"})
        assert await member.recv() == {"op": "auth_ok"}
        await member.sub("s", "x")
        await intruder.send({"op": "pub", "subject": "x", "frame": "evil"})
        assert (await intruder.at_eof())[0].startswith(b'{"op":"err"')
        await member.pub("x", "good")
        assert (await member.recv())["frame"] == "good"


async def test_dev_synapse_with_token_in_url_and_keyword() -> None:
    sig = Signal(type=SignalType.TASK, trace_id="trc_tok", payload={"n": 1})
    async with DevSynapseServer(token="s3cret") as srv:
        got = anyio.Event()

        async def handler(s: Signal) -> None:
            got.set()

        async with (
            DevSynapse(f"{srv.url}?token=s3cret") as a,
            DevSynapse(srv.url, token="s3cret") as b,
        ):
            await a.subscribe("cosmonapse.t.TASK", handler)
            await a.publish("cosmonapse.t.TASK", sig)  # same connection: sub is in place
            await b.publish("cosmonapse.t.TASK", sig)
            with anyio.fail_after(10):
                await got.wait()

        with pytest.raises(SynapseError, match="refused the token: auth: bad token"):
            await DevSynapse(srv.url, token="nope").connect()
        with pytest.raises(SynapseError, match="refused the connection: auth required"):
            await DevSynapse(srv.url).connect()

    async with DevSynapseServer() as srv:
        with pytest.raises(SynapseError, match="unknown op 'auth'"):
            await DevSynapse(srv.url, token="s3cret").connect()


def test_two_different_tokens_are_an_error() -> None:
    with pytest.raises(ValueError, match="two different tokens"):
        DevSynapse("cosmo://h:1?token=a", token="b")


async def test_non_loopback_without_token_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cosmonapse.synapse.dev_server"):
        async with DevSynapseServer(host="0.0.0.0") as srv:
            assert srv.port > 0
    assert any("without a token" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cosmonapse.synapse.dev_server"):
        async with DevSynapseServer(host="0.0.0.0", token="t"):
            pass
        async with DevSynapseServer(host="127.0.0.1"):
            pass
    assert not any("without a token" in r.getMessage() for r in caplog.records)
