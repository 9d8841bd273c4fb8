"""Dev bus limits (issue 9, item 9), each tried from a raw socket.

Auth within a deadline, short lines before auth, a connection cap, one budget
for all outboxes, throttled token guesses, subjects checked, deep JSON answered
with ``err``, and namespaces that belong to their connection.
"""

from __future__ import annotations

import anyio
import orjson
import pytest
from devbus_util import RawClient

from cosmonapse.synapse.dev_limits import AuthThrottle, DevBusLimits, subject_error
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio


async def test_auth_must_complete_within_the_timeout() -> None:
    limits = DevBusLimits(auth_timeout=0.3)
    async with DevSynapseServer(token="t", limits=limits) as srv, await RawClient.connect(srv.port) as c:
        with anyio.fail_after(5):
            lines = await c.at_eof()  # says nothing: the server hangs up on its own
        assert [orjson.loads(line)["message"] for line in lines] == ["auth timeout: no auth within 0.3s"]
        assert srv.stats.auth_timeouts == 1
        assert srv.stats.connections_open == 0


async def test_the_default_auth_timeout_is_two_seconds() -> None:
    assert DevBusLimits().auth_timeout == 2.0
    async with DevSynapseServer(token="t") as srv, await RawClient.connect(srv.port) as c:
        with anyio.fail_after(10):
            lines = await c.at_eof()
        assert orjson.loads(lines[0])["message"].startswith("auth timeout")


async def test_lines_before_auth_are_short() -> None:
    limits = DevBusLimits(max_line_before_auth=256)
    async with DevSynapseServer(token="t", limits=limits) as srv:
        async with await RawClient.connect(srv.port) as c:
            await c.send_raw(b'{"op":"auth","token":"' + b"x" * 10_000 + b'"}\n')
            lines = await c.at_eof()
            assert (
                orjson.loads(lines[0])["message"] == "auth required; line too long: over 256 bytes, skipped"
            )
        async with await RawClient.connect(srv.port) as c:  # after auth, the normal limit applies
            await c.send({"op": "auth", "token": "t"})
            assert await c.recv() == {"op": "auth_ok"}
            await c.sub("s", "big")
            await c.pub("big", "y" * 10_000)
            assert len((await c.recv())["frame"]) == 10_000


async def test_connections_over_the_cap_are_refused_and_room_comes_back() -> None:
    async with DevSynapseServer(limits=DevBusLimits(max_connections=3)) as srv:
        held = [await RawClient.connect(srv.port) for _ in range(3)]
        for c in held:
            await c.sync()
        async with await RawClient.connect(srv.port, welcome=False) as extra:
            lines = await extra.at_eof()
            assert orjson.loads(lines[0]) == {"op": "err", "message": "too many connections (the cap is 3)"}
        assert srv.stats.connections_refused == 1
        await held.pop().aclose()
        with anyio.fail_after(10):
            while srv.stats.connections_open > 2:
                await held[0].sync()
        async with await RawClient.connect(srv.port) as again:  # a slot is free again
            await again.sync()
        for c in held:
            await c.aclose()


def test_the_cap_stays_below_the_descriptor_limit() -> None:
    assert DevBusLimits(max_connections=10**9).connection_cap() < 10**9


async def test_all_outboxes_share_one_budget() -> None:
    """Two subscribers that never read: the one holding the most is dropped when the total is reached."""
    blob = "b" * 32 * 1024
    limits = DevBusLimits(max_outbox_total=1024 * 1024)
    async with (
        DevSynapseServer(limits=limits, outbox_bytes=64 * 1024 * 1024, outbox_size=100_000) as srv,
        await RawClient.connect(srv.port) as pub,
        await RawClient.connect(srv.port) as frozen_a,
        await RawClient.connect(srv.port) as frozen_b,
    ):
        for name, c in (("a", frozen_a), ("b", frozen_b)):
            await c.sub(name, "cosmonapse.budget.TASK")
            await c.sync()
        most = 0
        with anyio.fail_after(60):
            while srv.stats.slow_consumer_disconnects < 2:
                await pub.pub("cosmonapse.budget.TASK", blob)
                await pub.sync()
                most = max(most, srv.stats.queued_bytes)
        assert most <= limits.max_outbox_total
        await pub.sync()
        assert srv.stats.queued_bytes == 0  # what the dropped ones held is written off


async def test_token_guesses_are_throttled() -> None:
    limits = DevBusLimits(auth_attempts_burst=3, auth_attempts_per_s=0.01)
    async with DevSynapseServer(token="right", limits=limits) as srv:
        for _ in range(3):
            async with await RawClient.connect(srv.port) as c:
                await c.send({"op": "auth", "token": "guess"})
                assert orjson.loads((await c.at_eof())[0])["message"] == "auth: bad token"
        async with await RawClient.connect(srv.port) as c:
            await c.send({"op": "auth", "token": "right"})  # even the right one: not checked now
            message = orjson.loads((await c.at_eof())[0])["message"]
        assert message == "auth: too many failed attempts from 127.0.0.1; try again later"
        assert srv.stats.auth_throttled == 1


def test_auth_throttle_refills() -> None:
    throttle = AuthThrottle(burst=2, per_s=1000.0, max_addresses=2)
    throttle.failed("a")
    throttle.failed("a")
    throttle.failed("b")
    throttle.failed("c")  # the least recently seen address is forgotten
    assert len(throttle._buckets) == 2


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"op": "pub", "subject": "cosmonapse.ns.*", "frame": "{}"}, "pub: cannot publish to a wildcard"),
        ({"op": "pub", "subject": "cosmonapse.>", "frame": "{}"}, "pub: cannot publish to a wildcard"),
        ({"op": "pub", "subject": "a..b", "frame": "{}"}, "pub: subject 'a..b' has an empty token"),
        ({"op": "pub", "subject": "a b", "frame": "{}"}, "pub: subject 'a b' contains whitespace"),
        ({"op": "sub", "sub_id": "s", "subject": "a.>.b"}, "sub: subject 'a.>.b': '>' may only be"),
        ({"op": "sub", "sub_id": "s", "subject": ".a"}, "sub: subject '.a' has an empty token"),
        ({"op": "ns_register", "namespace": "n", "transport": {"x": 1}}, "ns_register: transport must be"),
    ],
)
async def test_bad_subjects_get_err_and_the_connection_keeps_serving(
    message: dict[str, object], error: str
) -> None:
    async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as c:
        await c.sub("all", ">")
        await c.send(message)
        answer = await c.recv()
        assert answer["op"] == "err" and answer["message"].startswith(error), answer
        await c.sync()  # nothing was delivered before the pong
        assert srv.stats.published == 0


def test_subject_rules() -> None:
    assert subject_error("cosmonapse.ns.TASK.routed", publish=True) is None
    assert subject_error("cosmonapse.*.TASK", publish=False) is None
    assert subject_error("cosmonapse.>", publish=False) is None
    assert subject_error("a*.b>", publish=True) is None  # partial wildcards are literal, as in NATS


async def test_deep_json_gets_err_not_a_dead_connection() -> None:
    async with (
        DevSynapseServer(max_line=4 * 1024 * 1024) as srv,
        await RawClient.connect(srv.port) as c,
        await RawClient.connect(srv.port) as watcher,
    ):
        await watcher.sub("w", "deep")
        await watcher.sync()
        # A non-string frame 300 levels deep: fine to parse, too deep to re-encode for delivery.
        deep = b"[" * 300 + b'"x"' + b"]" * 300
        await c.send_raw(b'{"op":"pub","subject":"deep","frame":' + deep + b"}\n")
        answer = await c.recv()
        assert answer["op"] == "err" and answer["message"].startswith("pub: frame cannot be forwarded"), (
            answer
        )
        # A whole line deeper than the JSON parser goes: bad JSON, as for any unparsable line.
        await c.send_raw(b"[" * 5000 + b"]" * 5000 + b"\n")
        answer = await c.recv()
        assert answer["op"] == "err" and answer["message"].startswith("bad JSON"), answer
        await c.sync()
        await c.pub("deep", "fine")
        assert (await watcher.recv())["frame"] == "fine"  # only the good one was delivered


async def test_a_namespace_cannot_be_taken_from_its_owner() -> None:
    async with (
        DevSynapseServer() as srv,
        await RawClient.connect(srv.port) as owner,
        await RawClient.connect(srv.port) as intruder,
        await RawClient.connect(srv.port) as tool,
    ):
        await owner.send({"op": "ns_register", "namespace": "dev"})
        assert await owner.recv() == {"op": "ns_registered", "namespace": "dev"}
        await intruder.send({"op": "ns_register", "namespace": "dev"})
        assert await intruder.recv() == {
            "op": "err",
            "message": "ns_register: namespace 'dev' is registered by another connection",
        }
        await owner.send({"op": "ns_register", "namespace": "dev", "transport": "memory"})  # its own: fine
        assert await owner.recv() == {"op": "ns_registered", "namespace": "dev"}
        await tool.send({"op": "mgmt_stop", "namespace": "dev"})
        assert await tool.recv() == {"op": "mgmt_stop_ack", "namespace": "dev"}
        assert await owner.recv() == {
            "op": "ns_stopping",
            "namespace": "dev",
        }  # to the owner, not the intruder
        await intruder.sync()  # nothing else was sent to it
        # Once the owner is gone (or stopped it), the name is free again.
        await intruder.send({"op": "ns_register", "namespace": "dev"})
        assert await intruder.recv() == {"op": "ns_registered", "namespace": "dev"}
