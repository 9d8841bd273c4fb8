"""The cosmo:// dev bus server, spoken to over raw sockets (§17)."""

from __future__ import annotations

import importlib.resources
from datetime import datetime

import anyio
import orjson
import pytest
from devbus_util import RawClient

from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio

FRAME = orjson.dumps(
    {"v": "1", "id": "evt_1", "trace_id": "trc_1", "type": "TASK", "payload": {"input": {"x": 'é\n"q"'}}}
).decode()


def msg_line(subject: str, frame: object, sub_id: str) -> bytes:
    """The reference server's delivery frame: keys op, subject, frame, sub_id, compact."""
    return orjson.dumps({"op": "msg", "subject": subject, "frame": frame, "sub_id": sub_id})


async def test_transcript_of_section_17_6() -> None:
    async with DevSynapseServer() as srv, RawClient(await anyio.connect_tcp("127.0.0.1", srv.port)) as c:
        assert await c.recv_raw() == b'{"op":"welcome"}'
        await c.sub("a1", "cosmonapse.demo.>")
        await c.sub("a2", "cosmonapse.demo.TASK.routed", "caps:echo")
        await c.pub("cosmonapse.demo.TASK.routed", FRAME)
        assert await c.recv_raw() == msg_line("cosmonapse.demo.TASK.routed", FRAME, "a1")
        assert await c.recv_raw() == msg_line("cosmonapse.demo.TASK.routed", FRAME, "a2")
        await c.send({"op": "ping"})
        assert await c.recv_raw() == b'{"op":"pong"}'
        await c.send({"op": "hello"})
        assert await c.recv_raw() == b'{"op":"welcome"}'


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"op": "pub", "frame": "{}"}, "pub: missing subject/frame"),
        ({"op": "pub", "subject": "a.b"}, "pub: missing subject/frame"),
        ({"op": "pub", "subject": "", "frame": "{}"}, "pub: missing subject/frame"),
        ({"op": "pub", "subject": 7, "frame": "{}"}, "pub: subject must be a string"),
        ({"op": "sub", "subject": "a.b"}, "sub: missing sub_id/subject"),
        ({"op": "sub", "sub_id": "s1"}, "sub: missing sub_id/subject"),
        ({"op": "sub", "sub_id": "s1", "subject": "a", "queue_group": 3}, "sub: queue_group must be"),
        ({"op": "ns_register"}, "ns_register: missing namespace"),
        ({"op": "mgmt_info", "namespace": "nope"}, "namespace 'nope' not found"),
        ({"op": "mgmt_stop", "namespace": "nope"}, "namespace 'nope' not found"),
        ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
        ({"no_op": 1}, "unknown op None"),
        ({"op": "auth", "token": "x"}, "unknown op 'auth'"),  # no token configured: as the reference
    ],
)
async def test_bad_requests_get_err_and_the_connection_keeps_serving(
    message: dict[str, object], error: str
) -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        await c.send(message)
        answer = await c.recv()
        assert answer["op"] == "err"
        assert answer["message"].startswith(error)
        await c.sync()
        assert srv.stats.errors_sent == 1


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"\x00\x01\xfe garbage \xff", "bad JSON"),
        (b'{"op":"ping","x":"\xff\xfe"}', "bad JSON"),  # not UTF-8
        (b"hello there", "bad JSON"),
        (b"", "bad JSON"),  # the reference answers an empty line too
        (b"[1,2,3]", "bad message: expected a JSON object, got list"),
        (b'"op"', "bad message: expected a JSON object, got str"),
        (b"42", "bad message: expected a JSON object, got int"),
    ],
)
async def test_garbage_lines_get_err_and_the_connection_keeps_serving(line: bytes, error: str) -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        await c.send_raw(line + b"\n")
        answer = await c.recv()
        assert answer["op"] == "err"
        assert answer["message"].startswith(error)
        await c.sync()


async def test_oversized_line_is_skipped_with_err() -> None:
    async with DevSynapseServer(max_line=1024) as srv, await RawClient.connect(srv.port) as c:
        await c.sub("s", "big.>")
        # One over-long pub in several writes, then a good one in the same write as its tail.
        big = orjson.dumps({"op": "pub", "subject": "big.one", "frame": "x" * 5000})
        await c.send_raw(big[:700])
        await c.send_raw(big[700:3000])
        await c.send_raw(
            big[3000:] + b"\n" + orjson.dumps({"op": "pub", "subject": "big.two", "frame": "ok"})
        )
        await c.send_raw(b"\n")
        answer = await c.recv()
        assert answer == {"op": "err", "message": "line too long: over 1024 bytes, skipped"}
        assert await c.recv() == {"op": "msg", "subject": "big.two", "frame": "ok", "sub_id": "s"}
        # An over-long line sent in one piece, followed at once by a ping.
        await c.send_raw(b"y" * 4096 + b'\n{"op":"ping"}\n')
        assert (await c.recv())["message"].startswith("line too long")
        assert await c.recv() == {"op": "pong"}
        assert srv.stats.oversized_lines == 2


@pytest.mark.parametrize("size", [70 * 1024, 2 * 1024 * 1024])
async def test_large_frames_are_delivered_intact(size: int) -> None:
    frame = orjson.dumps({"v": "1", "type": "TASK", "payload": {"blob": "ab\u00e9" * (size // 4)}}).decode()
    async with (
        DevSynapseServer(max_line=4 * 1024 * 1024) as srv,
        await RawClient.connect(srv.port) as sub,
        await RawClient.connect(srv.port) as pub,
    ):
        await sub.sub("s", "cosmonapse.big.TASK")
        await sub.sync()
        await pub.pub("cosmonapse.big.TASK", frame)
        got = await sub.recv()
        assert got["frame"] == frame
        assert len(got["frame"]) >= size * 0.75


async def test_unsub_and_sub_id_reuse() -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        await c.sub("s", "a.one")
        await c.sub("s", "a.two")  # replaces: a.one no longer delivered
        await c.send({"op": "unsub", "sub_id": "never-subscribed"})  # ignored, no answer
        await c.pub("a.one", "1")
        await c.pub("a.two", "2")
        assert await c.recv() == {"op": "msg", "subject": "a.two", "frame": "2", "sub_id": "s"}
        await c.send({"op": "unsub", "sub_id": "s"})
        await c.pub("a.two", "3")
        await c.sync()  # pong comes first: nothing was delivered after the unsub


async def test_no_echo_suppression_and_one_copy_per_subscription() -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        await c.sub("x", "cosmonapse.ns.TASK")
        await c.sub("y", "cosmonapse.ns.*")
        await c.pub("cosmonapse.ns.TASK", FRAME)
        got = {(await c.recv())["sub_id"], (await c.recv())["sub_id"]}
        assert got == {"x", "y"}
        await c.sync()


async def test_non_string_frames_are_forwarded_as_is() -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        await c.sub("s", "t")
        await c.pub("t", {"an": ["object"]})
        assert (await c.recv())["frame"] == {"an": ["object"]}


async def test_a_hundred_subscribers_each_get_a_copy() -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as pub:
        clients = [await RawClient.connect(srv.port) for _ in range(100)]
        try:
            for i, c in enumerate(clients):
                await c.sub(f"s{i}", "cosmonapse.fan.>")
            for c in clients:
                await c.sync()
            await pub.pub("cosmonapse.fan.TASK", FRAME)
            for i, c in enumerate(clients):
                assert await c.recv() == {
                    "op": "msg",
                    "subject": "cosmonapse.fan.TASK",
                    "frame": FRAME,
                    "sub_id": f"s{i}",
                }
            assert srv.stats.delivered == 100
        finally:
            for c in clients:
                await c.aclose()


async def test_queue_group_round_robin_and_solo_copies() -> None:
    async with (
        DevSynapseServer() as srv,
        await RawClient.connect(srv.port) as a,
        await RawClient.connect(srv.port) as b,
        await RawClient.connect(srv.port) as solo,
    ):
        await a.sub("a1", "cosmonapse.q.TASK.routed", "caps:echo")
        await a.sub("a2", "cosmonapse.q.TASK.routed", "caps:echo")
        await b.sub("b1", "cosmonapse.q.TASK.routed", "caps:echo")
        await b.sub("other", "cosmonapse.q.>", "caps:other")
        await solo.sub("s", "cosmonapse.q.>")
        for c in (a, b, solo):
            await c.sync()
        for i in range(9):
            await solo.pub("cosmonapse.q.TASK.routed", str(i))
        solo_got = [(await solo.recv())["frame"] for _ in range(9)]
        assert solo_got == [str(i) for i in range(9)]
        a_got = [await a.recv() for _ in range(6)]
        b_got = [await b.recv() for _ in range(3 + 9)]
        await a.sync()
        await b.sync()
        counts: dict[str, int] = {}
        for m in a_got + b_got:
            counts[m["sub_id"]] = counts.get(m["sub_id"], 0) + 1
        assert counts == {"a1": 3, "a2": 3, "b1": 3, "other": 9}


async def test_wildcards() -> None:
    patterns = {
        "star": "cosmonapse.*.TASK",
        "tail": "cosmonapse.demo.>",
        "all": "cosmonapse.>",
        "exact": "cosmonapse.demo.TASK",
        "two_stars": "*.*",
    }
    subjects = {
        "cosmonapse.demo.TASK": {"star", "tail", "all", "exact"},
        "cosmonapse.other.TASK": {"star", "all"},
        "cosmonapse.demo.TASK.routed": {"tail", "all"},
        "cosmonapse.demo": {"all", "two_stars"},
        "cosmonapse": set(),
        "elsewhere.demo.TASK": set(),
    }
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        for sub_id, pattern in patterns.items():
            await c.sub(sub_id, pattern)
        for subject, expected in subjects.items():
            await c.pub(subject, "f")
            got = {(await c.recv())["sub_id"] for _ in expected}
            await c.sync()  # nothing more than expected arrived before the pong
            assert got == expected, subject


async def test_namespaces_are_isolated() -> None:
    async with (
        DevSynapseServer() as srv,
        await RawClient.connect(srv.port) as a,
        await RawClient.connect(srv.port) as pub,
    ):
        await a.sub("s", "cosmonapse.alpha.>")
        await a.sync()
        await pub.pub("cosmonapse.beta.TASK", "beta")
        await pub.pub("cosmonapse.alphabet.TASK", "alphabet")
        await pub.pub("cosmonapse.alpha.TASK", "alpha")
        assert (await a.recv())["frame"] == "alpha"  # the two before it were not delivered


async def test_namespace_management_ops() -> None:
    async with (
        DevSynapseServer() as srv,
        await RawClient.connect(srv.port) as owner,
        await RawClient.connect(srv.port) as tool,
    ):
        await owner.send({"op": "ns_register", "namespace": "dev"})
        assert await owner.recv() == {"op": "ns_registered", "namespace": "dev"}
        await owner.send({"op": "ns_register", "namespace": "nats-ns", "transport": "nats"})
        assert await owner.recv() == {"op": "ns_registered", "namespace": "nats-ns"}
        for subject in ("cosmonapse.dev.TASK", "cosmonapse.dev.TASK.routed", "cosmonapse.devx.TASK", "dev.x"):
            await tool.pub(subject, FRAME)
        await tool.send({"op": "mgmt_list"})
        listing = await tool.recv()
        assert listing["op"] == "mgmt_ns_list"
        rows = {row["namespace"]: row for row in listing["namespaces"]}
        assert set(rows) == {"dev", "nats-ns"}
        assert set(rows["dev"]) == {"namespace", "transport", "started_at", "signal_count"}
        assert rows["dev"]["transport"] == "memory"
        assert rows["nats-ns"]["transport"] == "nats"
        assert rows["dev"]["signal_count"] == 2
        assert rows["dev"]["started_at"].endswith("+00:00")
        datetime.fromisoformat(rows["dev"]["started_at"])

        await tool.send({"op": "mgmt_info", "namespace": "dev"})
        info = await tool.recv()
        assert info == {
            "op": "mgmt_ns_info",
            "namespace": "dev",
            "transport": "memory",
            "started_at": rows["dev"]["started_at"],
            "signal_count": 2,
            "client_count": 2,
        }

        await tool.send({"op": "mgmt_stop", "namespace": "dev"})
        assert await tool.recv() == {"op": "mgmt_stop_ack", "namespace": "dev"}
        assert await owner.recv() == {"op": "ns_stopping", "namespace": "dev"}
        assert srv.namespaces == {"nats-ns": "nats"}

        await owner.aclose()  # the owner's other namespace goes with it
        with anyio.fail_after(10):
            while srv.namespaces:
                await tool.sync()
        await tool.send({"op": "mgmt_list"})
        assert await tool.recv() == {"op": "mgmt_ns_list", "namespaces": []}


async def test_golden_vectors_pass_through_byte_identical() -> None:
    lines = (
        importlib.resources.files("cosmonapse.testing")
        .joinpath("vectors/valid.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    frames = [line for line in lines if line.strip()]
    assert len(frames) >= 30
    async with (
        DevSynapseServer() as srv,
        await RawClient.connect(srv.port) as sub,
        await RawClient.connect(srv.port) as pub,
    ):
        await sub.sub("g", "cosmonapse.golden.>")
        await sub.sync()
        for frame in frames:
            kind = orjson.loads(frame)["type"]
            await pub.pub(f"cosmonapse.golden.{kind}", frame)
        for frame in frames:
            got = await sub.recv()
            assert got["frame"] == frame


async def test_counters() -> None:
    async with DevSynapseServer() as srv:
        async with await RawClient.connect(srv.port) as c:
            await c.sub("s", "a")
            await c.pub("a", "1")
            await c.recv()
            assert srv.stats.connections_open == 1
            assert srv.stats.published == 1
            assert srv.stats.delivered == 1
        async with await RawClient.connect(srv.port) as c:
            await c.sync()
            assert srv.stats.connections_total == 2
