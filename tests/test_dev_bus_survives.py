"""The dev bus never dies of one connection (issue 9, item 1), over raw sockets.

A subscriber that is slow and then resets its TCP connection used to end the
whole server: the goodbye ``err`` sent while cleaning that connection up raised
``BrokenResourceError`` into the server's task group.  ``--tail`` with a stdout
nobody reads froze the bus.  Both are tried here against the real thing.
"""

from __future__ import annotations

import signal
import socket
import struct

import anyio
import orjson
import pytest
from anyio.abc import SocketAttribute
from devbus_util import COSMO, RawClient, cosmo_start, rest_of

from cosmonapse.synapse.dev_limits import DevBusLimits
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio

BLOB = "z" * 64 * 1024


def reset(client: RawClient) -> None:
    """Abort the connection: SO_LINGER 0, so close() sends a RST instead of a FIN."""
    sock = client.stream.extra(SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def subscribers_that_never_read(port: int, count: int) -> list[RawClient]:
    clients = [await RawClient.connect(port) for _ in range(count)]
    for i, client in enumerate(clients):
        await client.sub(f"v{i}", "cosmonapse.flood.TASK")
        await client.sync()
    return clients


async def reset_all(clients: list[RawClient]) -> None:
    for client in clients:
        reset(client)
        await client.aclose()


async def still_serving(server: DevSynapseServer) -> None:
    """A new client gets the banner, a pong, and its own publish back."""
    async with await RawClient.connect(server.port) as fresh:
        await fresh.sub("s", "cosmonapse.alive.TASK")
        await fresh.sync()
        await fresh.pub("cosmonapse.alive.TASK", "ok")
        assert (await fresh.recv())["frame"] == "ok"


@pytest.mark.parametrize("victims", [1, 8])
async def test_slow_subscribers_that_reset_do_not_end_the_bus(victims: int) -> None:
    async with (
        DevSynapseServer(outbox_size=8, outbox_bytes=256 * 1024) as server,
        await RawClient.connect(server.port) as publisher,
    ):
        slow = await subscribers_that_never_read(server.port, victims)
        with anyio.fail_after(60):
            # They never read: flood until the server gives up on every one of them.  Its
            # goodbye err then waits on a full socket ... which the peer resets.
            while server.stats.slow_consumer_disconnects < victims:
                for _ in range(16):
                    await publisher.pub("cosmonapse.flood.TASK", BLOB)
                await publisher.sync()
            await reset_all(slow)
            await publisher.sync()  # the publisher's own connection kept working
            await still_serving(server)
            while server.stats.connections_open > 1:  # every victim was cleaned up
                await publisher.sync()
    assert server.stats.connection_failures == 0


async def test_a_peer_that_resets_mid_goodbye_is_contained() -> None:
    """Refused at auth, then reset before the err can be written: still only that connection ends."""
    async with DevSynapseServer(token="t", limits=DevBusLimits(auth_attempts_burst=100)) as server:
        for _ in range(20):
            intruder = await RawClient.connect(server.port)
            await intruder.send({"op": "auth", "token": "wrong"})
            reset(intruder)
            await intruder.aclose()
        async with await RawClient.connect(server.port) as member:
            await member.send({"op": "auth", "token": "t"})
            assert await member.recv() == {"op": "auth_ok"}
            await member.sync()


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_tail_with_an_unread_stdout_never_blocks_the_bus(backend: str) -> None:
    """stdout is a pipe nobody reads: the tail drops lines, the bus keeps its latency."""
    async with cosmo_start("--tail", "--backend", backend) as (proc, url, out):
        port = int(url.rsplit(":", 1)[1])
        frame = orjson.dumps({"v": "1", "id": "evt_1", "trace_id": "trc_1", "type": "TASK"}).decode()
        async with await RawClient.connect(port) as pub, await RawClient.connect(port) as sub:
            await sub.sub("s", "cosmonapse.tail.TASK")
            await sub.sync()
            with anyio.fail_after(60):
                # ~100 bytes of tail per Signal: far more than a pipe holds (64 KiB).
                for _round in range(20):
                    for _ in range(1000):
                        await pub.pub("cosmonapse.tail.TASK", frame)
                    await pub.sync()  # each round trip is answered: the bus is not frozen
                for _ in range(20_000):
                    assert (await sub.recv())["frame"] == frame
        proc.send_signal(signal.SIGTERM)
        rest = await rest_of(out)  # reading now lets the last lines (and the summary) out
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        assert "lines dropped (stdout too slow)" in rest or "--tail dropped" in rest


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_quiet_is_accepted_and_keeps_only_the_listening_line() -> None:
    async with cosmo_start("--quiet") as (proc, url, out):
        async with await RawClient.connect(int(url.rsplit(":", 1)[1])) as c:
            await c.sync()
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        assert "stopped" not in await rest_of(out)
    both = await anyio.run_process([*COSMO, "synapse", "start", "memory", "--tail", "--quiet"], check=False)
    assert both.returncode == 2
    assert b"--tail and --quiet exclude each other" in both.stderr


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cli_bus_survives_a_resetting_slow_subscriber() -> None:
    """The same flood and resets against `cosmo synapse start`: the process stays up and serving."""
    async with cosmo_start() as (proc, url, _out):
        port = int(url.rsplit(":", 1)[1])
        async with await RawClient.connect(port) as publisher:
            slow = await subscribers_that_never_read(port, 4)
            with anyio.fail_after(60):
                # Past the default outbox (64 MiB) plus what the sockets hold: the bus gives up on
                # them and waits to say goodbye on their full sockets; then they reset.
                for _ in range(8):
                    for _ in range(160):
                        await publisher.pub("cosmonapse.flood.TASK", BLOB)
                    await publisher.sync()
                await reset_all(slow)
                await publisher.sync()
            assert proc.returncode is None
            async with await RawClient.connect(port) as fresh:
                await fresh.sync()
