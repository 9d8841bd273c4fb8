"""Prism's server on a real dev bus, in-process on asyncio and trio: what it reads, what it
publishes (one DISCOVER), and who may read through it (token, Host, Origin)."""

from __future__ import annotations

import anyio
import httpx
import pytest
from nats_util import Inbox
from prism_util import WsClient, prism_running

from cosmonapse import Directed, Signal, SignalType, connect_synapse
from cosmonapse.prism.app import SECURITY_HEADERS
from cosmonapse.synapse.dev_server import DevSynapseServer

pytestmark = pytest.mark.anyio
NS = "prismtest"


async def test_reads_the_whole_namespace_tasks_included_and_publishes_one_discover() -> None:
    async with DevSynapseServer() as bus, await connect_synapse(bus.url) as probe:
        everything = Inbox()
        await probe.subscribe(f"cosmonapse.{NS}.>", everything)
        async with prism_running(bus.url, NS) as prism:
            (discover,) = await everything.wait_for(1)
            assert discover.type is SignalType.DISCOVER and discover.payload == {}
            async with WsClient.open(prism.port, prism.ws_target(), origin=prism.origin) as ws:
                hello = await ws.receive_json()
                assert hello["kind"] == "hello" and hello["namespace"] == NS and hello["bus"] == bus.url
                task = Signal(type=SignalType.TASK, directed=Directed("w"), payload={"input": {"q": 1}})
                routed = Signal(type=SignalType.TASK, payload={"input": {}, "capabilities": ["c"]})
                reply = Signal(type=SignalType.AGENT_OUTPUT, trace_id=task.trace_id, parent_id=task.id,
                               payload={"output": {"a": 1}})  # fmt: skip
                await probe.publish(f"cosmonapse.{NS}.TASK", task)
                await probe.publish(f"cosmonapse.{NS}.TASK.routed", routed)
                await probe.publish(f"cosmonapse.{NS}.AGENT_OUTPUT", reply)
                await probe.publish("cosmonapse.other.TASK", Signal(type=SignalType.TASK))
                got = await ws.signals(4)  # the DISCOVER (history) and our three
                assert [s["id"] for s in got] == [discover.id, task.id, routed.id, reply.id]
                assert got[1]["payload"] == {"input": {"q": 1}} and got[1]["directed"]["id"] == "w"
                await ws.send_text('{"url": "nats://elsewhere", "namespace": "other"}')  # ignored
                await probe.publish(f"cosmonapse.{NS}.FINAL", last := Signal(type=SignalType.FINAL))
                assert [s["id"] for s in await ws.signals(1)] == [last.id]
        # Prism published the one DISCOVER and nothing else (the rest is ours)
        ours = {task.id, routed.id, reply.id, last.id}
        assert [s.type for s in everything.items if s.id not in ours] == [SignalType.DISCOVER]


async def test_a_page_opened_late_gets_the_history_then_live_signals() -> None:
    async with (
        DevSynapseServer() as bus,
        await connect_synapse(bus.url) as probe,
        prism_running(bus.url, NS, history=3) as prism,
        WsClient.open(prism.port, prism.ws_target(), origin=prism.origin) as early,
    ):
        await early.receive_json()
        await early.signals(1)  # the DISCOVER: the bus feed is live
        sent = [Signal(type=SignalType.PLAN, payload={"steps": [i]}) for i in range(5)]
        for sig in sent:
            await probe.publish(f"cosmonapse.{NS}.PLAN", sig)
        assert [s["id"] for s in await early.signals(5)] == [s.id for s in sent]
        async with WsClient.open(prism.port, prism.ws_target(), origin=prism.origin) as late:
            hello = await late.receive_json()
            assert hello["history"] == 3
            assert [s["id"] for s in await late.signals(3)] == [s.id for s in sent[2:]]


@pytest.mark.parametrize(
    ("target", "origin", "host"),
    [
        pytest.param("no-token", "ours", None, id="missing-token"),
        pytest.param("wrong-token", "ours", None, id="wrong-token"),
        pytest.param("token", None, None, id="no-origin"),
        pytest.param("token", "http://evil.example", None, id="foreign-origin"),
        pytest.param("token", "http://127.0.0.1:1", None, id="other-port-origin"),
        pytest.param("token", "null", None, id="null-origin"),
        pytest.param("token", "ours", "evil.example:{port}", id="rebound-host"),
    ],
)
async def test_the_data_channel_refuses(target: str, origin: str | None, host: str | None) -> None:
    async with DevSynapseServer() as bus, prism_running(bus.url, NS) as prism:
        path = {"no-token": prism.ws_target(None), "wrong-token": prism.ws_target("x" * 43)}.get(
            target, prism.ws_target()
        )
        async with WsClient.open(
            prism.port, path, origin=prism.origin if origin == "ours" else origin,
            host=host.format(port=prism.port) if host else None,
        ) as ws:  # fmt: skip
            assert ws.status == 403
        async with WsClient.open(prism.port, prism.ws_target(), origin=prism.origin) as good:
            assert good.status == 101  # the right token from our own origin still works


async def test_the_page_needs_the_token_and_our_host_and_sends_hardening_headers() -> None:
    async with (
        DevSynapseServer() as bus,
        prism_running(bus.url, NS) as prism,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{prism.port}") as http,
    ):
        page = await http.get(f"/?token={prism.token}")
        assert page.status_code == 200 and '<script type="module" src="/static/js/app.js">' in page.text
        for key, value in SECURITY_HEADERS.items():
            assert page.headers[key] == value
        assert (await http.get("/")).status_code == 401
        assert (await http.get("/?token=nope")).status_code == 401
        rebound = await http.get(f"/?token={prism.token}", headers={"host": f"evil.example:{prism.port}"})
        assert rebound.status_code == 421
        assert (await http.get("/static/js/app.js")).headers["content-type"].startswith("text/javascript")
        assert (await http.get("/static/../server.py")).status_code == 404


async def test_bad_bus_url_or_namespace_fail_before_serving() -> None:
    from cosmonapse.prism.server import PrismServer

    with pytest.raises(ValueError, match="one subject token"):
        PrismServer("cosmo://127.0.0.1:1", "a.b")
    server = PrismServer("cosmo://127.0.0.1:1", NS, port=0)
    with pytest.raises(Exception, match=r"127\.0\.0\.1:1"):
        await server.serve(anyio.Event().wait, lambda url: None)


async def test_a_page_that_stops_reading_never_slows_the_bus_or_other_pages() -> None:
    """Pages that fall behind lose their oldest Signals and are told how many; the bus never waits."""
    count, blob = 6000, "x" * 4000  # ~24 MB: more than the socket buffers hold
    async with (
        DevSynapseServer() as bus,
        await connect_synapse(bus.url) as probe,
        prism_running(bus.url, NS, page_limit=100, history=0) as prism,
        WsClient.open(prism.port, prism.ws_target(), origin=prism.origin) as stalled,
        WsClient.open(prism.port, prism.ws_target(), origin=prism.origin) as reader,
    ):
        await stalled.receive_json()
        await reader.receive_json()  # hello: both feeds are attached
        echo = Inbox()
        await probe.subscribe(f"cosmonapse.{NS}.PLAN", echo)
        for i in range(count):
            await probe.publish(
                f"cosmonapse.{NS}.PLAN", Signal(type=SignalType.PLAN, payload={"steps": [i, blob]})
            )
        await echo.wait_for(count, timeout_s=120)  # the bus delivered everything while a page was stalled
        seen: list[int] = []
        told = 0
        with anyio.fail_after(120):
            while not seen or seen[-1] != count - 1:
                msg = await reader.receive_json(60)
                told += msg.get("dropped", 0)
                seen += [s["payload"]["steps"][0] for s in msg.get("signals", ())]
        assert seen == sorted(seen) and len(seen) + told == count  # in order; every loss was reported
        stalled_told = 0
        with anyio.fail_after(60):
            while stalled_told == 0:
                stalled_told += (await stalled.receive_json(60)).get("dropped", 0)
        assert stalled_told > 0
