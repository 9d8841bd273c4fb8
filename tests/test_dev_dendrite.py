"""Dendrites in separate OS processes over the cosmo:// dev bus."""

from __future__ import annotations

import signal

import anyio
import orjson
import pytest
from devbus_util import RawClient, ServerInTask, cosmo_start, expect_line, peer_process, rest_of

from cosmonapse import Dendrite, DevSynapse, DispatchTimeout

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class RegisterWatch:
    """``on_publish`` hook: an event per REGISTER the bus relays (a peer's subs are in place by then)."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.count = 0

    def __call__(self, subject: str, frame: object) -> None:
        if subject.endswith(".REGISTER"):
            self.count += 1
            self.event.set()

    async def next(self) -> None:
        with anyio.fail_after(30):
            await self.event.wait()
        self.event = anyio.Event()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_worker_and_orchestrator_processes_over_the_cli_bus() -> None:
    """The seed-000 shape: `cosmo synapse start`, a worker process, an orchestrator process."""
    async with cosmo_start("-n", "xproc") as (bus, url, bus_out):
        port = int(url.rsplit(":", 1)[1])
        async with await RawClient.connect(port) as observer:
            await observer.sub("reg", "cosmonapse.xproc.REGISTER")
            await observer.sync()
            async with peer_process("worker", url, "xproc") as (worker, worker_out):
                await expect_line(worker_out, "ready")
                register = orjson.loads((await observer.recv(30))["frame"])
                assert register["directed"]["id"] == "echo"
                async with peer_process("orchestrator", url, "xproc", "5") as (orch, orch_out):
                    with anyio.fail_after(60):
                        assert await orch.wait() == 0
                    lines = (await rest_of(orch_out)).splitlines()
                assert [line.split()[:2] for line in lines] == [
                    ["ok", str(n)] for n in range(5) for _ in (0, 1)
                ]
                assert {line.split()[2] for line in lines} == {str(worker.pid)}
                worker.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    assert await worker.wait() == 0
        bus.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await bus.wait() == 0
        assert "stopped (namespace xproc" in await rest_of(bus_out)


async def test_bus_restart_mid_run_worker_reregisters_and_dispatch_resumes() -> None:
    watch = RegisterWatch()
    async with anyio.create_task_group() as tg:
        bus = ServerInTask(tg, on_publish=watch)
        srv = await bus.start()
        async with (
            peer_process("worker", srv.url, "restart") as (worker, _out),
            DevSynapse(srv.url, reconnect_delay=0.02) as syn,
            Dendrite(synapse=syn, namespace="restart") as orch,
        ):
            await watch.next()  # the worker's REGISTER: its subscriptions are live
            reply = await orch.dispatch_and_wait(neuron="echo", input={"before": 1}, timeout_s=10)
            assert reply.payload["output"]["pid"] == worker.pid

            reconnected = anyio.Event()
            syn.add_reconnect_callback(reconnected.set)
            await bus.stop()
            srv = await bus.start(port=srv.port)
            await watch.next()  # the worker reconnected and re-REGISTERed
            with anyio.fail_after(30):
                await reconnected.wait()
            reply = await orch.dispatch_and_wait(neuron="echo", input={"after": 1}, timeout_s=10)
            assert reply.payload["output"] == {"echo": {"after": 1}, "pid": worker.pid}
            reply = await orch.dispatch_and_wait(capabilities=["echo"], input={"routed": 1}, timeout_s=10)
            assert reply.payload["output"]["echo"] == {"routed": 1}

            worker.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await worker.wait() == 0
        await bus.stop()


async def test_worker_killed_mid_task_times_out_the_caller_and_the_bus_keeps_serving() -> None:
    watch = RegisterWatch()
    async with anyio.create_task_group() as tg:
        bus = ServerInTask(tg, on_publish=watch)
        srv = await bus.start()
        async with DevSynapse(srv.url) as syn, Dendrite(synapse=syn, namespace="kill") as orch:
            async with peer_process("worker", srv.url, "kill") as (worker, worker_out):
                await watch.next()
                outcome: list[BaseException] = []

                async def call() -> None:
                    try:
                        await orch.dispatch_and_wait(
                            neuron="echo", input={"sleep": 60, "tag": "doomed"}, timeout_s=2
                        )
                    except DispatchTimeout as exc:
                        outcome.append(exc)

                async with anyio.create_task_group() as calls:
                    calls.start_soon(call)
                    await expect_line(worker_out, "started doomed")
                    worker.kill()
                    await worker.wait()
                assert len(outcome) == 1
                assert "no reply from neuron 'echo' within 2" in str(outcome[0])

            async with await RawClient.connect(srv.port) as probe:
                with anyio.fail_after(30):
                    while srv.stats.connections_open != 2:  # the orchestrator and the probe
                        await probe.sync()

            async with peer_process("worker", srv.url, "kill") as (worker, worker_out):
                await watch.next()
                reply = await orch.dispatch_and_wait(neuron="echo", input={"again": 1}, timeout_s=10)
                assert reply.payload["output"]["pid"] == worker.pid
                worker.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    assert await worker.wait() == 0
        await bus.stop()
