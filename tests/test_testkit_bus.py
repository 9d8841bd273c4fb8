"""TestSynapse: unmodified application code on an in-process bus, across loops and threads, with faults."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from cosmonapse import (
    Axon,
    Dendrite,
    DispatchTimeout,
    MemorySynapse,
    NeuronContext,
    Signal,
    SignalType,
    SynapseError,
    connect_synapse,
)
from cosmonapse.synapse.connect import OVERRIDES
from cosmonapse.testing import Fault, FaultInjector, SignalRecorder, TestSynapse
from cosmonapse.testing.bus import InProcessSynapse

T = SignalType
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return {"echo": input}


async def app_worker(url: str, ready: anyio.Event, done: anyio.Event) -> None:
    """Application code as a user writes it: it connects by URL."""
    synapse = await connect_synapse(url)
    try:
        worker = Dendrite(synapse=synapse, namespace="app", role="worker", dendrite_id="w")
        worker.attach_axon(Axon("echo", echo, ["echo"]))
        async with worker:
            ready.set()
            await done.wait()
    finally:
        await synapse.close()


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["cosmo://127.0.0.1:1", "nats://127.0.0.1:1", "memory://"])
async def test_any_url_meets_on_the_test_bus(url: str) -> None:
    with TestSynapse() as bus:
        ready, done = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(app_worker, url, ready, done)
            with anyio.fail_after(5):
                await ready.wait()
            synapse = await connect_synapse(url)
            assert isinstance(synapse, InProcessSynapse)
            try:
                async with Dendrite(synapse=synapse, namespace="app", dendrite_id="o") as orch:
                    by_id = await orch.dispatch_and_wait(neuron="echo", input={"x": 1}, timeout_s=5)
                    by_caps = await orch.dispatch_and_wait(capabilities=["echo"], input={"x": 1}, timeout_s=5)
                    for reply in (by_id, by_caps):
                        assert reply.payload["output"] == {"echo": {"x": 1}}
            finally:
                await synapse.close()
                done.set()
    types = [s.type for s in bus.signals]
    assert types.count(T.TASK) == 2 and types.count(T.AGENT_OUTPUT) == 2
    assert T.REGISTER in types and T.DEREGISTER in types
    assert not OVERRIDES, "the override is removed when the block ends"


def test_without_the_block_urls_are_real_again() -> None:
    with TestSynapse():
        pass
    from cosmonapse.synapse.connect import make_synapse

    assert not isinstance(make_synapse("cosmo://127.0.0.1:1"), InProcessSynapse)
    assert isinstance(make_synapse("memory://"), MemorySynapse)


@pytest.mark.anyio
async def test_the_wire_copy_refuses_what_a_network_bus_refuses() -> None:
    bus = TestSynapse()
    conn = await bus.connect()
    try:
        with pytest.raises(TypeError, match="set"):  # as DevSynapse/NatsSynapse.publish raise
            await conn.publish("cosmonapse.app.FINAL", Signal(type=T.FINAL, payload={"result": {1, 2}}))
        sent = Signal(type=T.FINAL, payload={"result": {"n": 1}})
        await conn.publish("cosmonapse.app.FINAL", sent)
        await bus.wait_for(lambda sigs: len(sigs) == 1)
        assert bus.signals[0] == sent and bus.signals[0] is not sent, "a decoded copy, as off a wire"
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_faults_drop_duplicate_reorder_and_disconnect() -> None:
    faults = FaultInjector()
    bus = TestSynapse(faults=faults, publish_timeout_s=0.5)
    async with bus.synapse("w") as w, bus.synapse("o") as o:
        worker = Dendrite(synapse=w, namespace="app", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon("echo", echo))
        orch = Dendrite(synapse=o, namespace="app", heartbeat_s=0)
        heard = SignalRecorder()  # straight on the connection: in delivery order
        await o.subscribe("cosmonapse.app.>", heard)
        async with worker, orch:
            faults.arm(Fault.drop(T.TASK))
            with pytest.raises(DispatchTimeout):
                await orch.dispatch_and_wait(neuron="echo", input={"n": 1}, timeout_s=0.3)
            assert [str(f) for f, _ in faults.fired] == ["drop next TASK"]

            faults.arm(Fault.duplicate(T.TASK))
            reply = await orch.dispatch_and_wait(neuron="echo", input={"n": 2}, timeout_s=2)
            assert [str(f) for f, _ in faults.fired][-1] == "duplicate next TASK"
            # the bus delivered it twice; the worker saw the second copy (its router takes both
            # before the Neuron replies) and did not run it again
            assert worker.stats.duplicate_tasks == 1
            assert sum(s.type is T.AGENT_OUTPUT and s.trace_id == reply.trace_id for s in bus.signals) == 1

            faults.arm(Fault.reorder(T.AGENT_OUTPUT))
            first = await orch.dispatch(neuron="echo", input={"n": 3})
            held = await bus.wait_for(lambda sigs: sigs[-1].type is T.AGENT_OUTPUT)  # published, not heard
            assert held[-1].trace_id == first.trace_id
            assert T.AGENT_OUTPUT not in {s.type for s in heard.trace(first.trace_id)}
            second = await orch.dispatch(neuron="echo", input={"n": 4})  # the next publish releases it
            with anyio.fail_after(2):
                await first.wait()
                await second.wait()
            heard_order = [(s.type, s.trace_id) for s in heard.signals]
            overtaker = heard_order.index((T.TASK, second.trace_id))
            assert overtaker < heard_order.index((T.AGENT_OUTPUT, first.trace_id))
            await first.close()
            await second.close()

            bus.disconnect("w")
            with pytest.raises(DispatchTimeout):
                await orch.dispatch_and_wait(neuron="echo", input={"n": 5}, timeout_s=0.3)
            registers = len([s for s in bus.signals if s.type is T.REGISTER])
            bus.reconnect("w")
            await bus.wait_for(lambda sigs: len([s for s in sigs if s.type is T.REGISTER]) > registers)
            reply = await orch.dispatch_and_wait(neuron="echo", input={"n": 6}, timeout_s=2)
            assert reply.payload["output"] == {"echo": {"n": 6}}


@pytest.mark.anyio
async def test_a_disconnected_publisher_waits_then_fails() -> None:
    bus = TestSynapse(publish_timeout_s=0.2)
    conn = await bus.connect("c")
    try:
        bus.disconnect("c")
        with pytest.raises(SynapseError, match="disconnected"):
            await conn.publish("cosmonapse.x.FINAL", Signal(type=T.FINAL, payload={"result": 1}))
    finally:
        await conn.close()


@pytest.fixture
def no_llm_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("HF_TOKEN", "COSMONAPSE_LLM_BASE_URL", "SYNAPSE_URL", "COSMO_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    yield


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_flask_example_and_its_worker_unmodified(no_llm_env: None, backend: str) -> None:
    """examples/bus/worker.py (async, its own loop) and examples/flask/flask_app.py (the sync facade)."""
    with TestSynapse() as bus:
        worker = load(EXAMPLES / "bus" / "worker.py", "kit_bus_worker")
        flask_app = load(EXAMPLES / "flask" / "flask_app.py", "kit_flask_app")
        try:
            with bus.background(worker.main, backend=backend):
                bus.wait_for_blocking(
                    lambda sigs: any(s.type is T.REGISTER and s.neuron == "worker" for s in sigs)
                )
                client = flask_app.app.test_client()
                resp = client.post("/ask", json={"prompt": "three little words"})
                assert resp.status_code == 200, resp.get_data(as_text=True)
                body = resp.get_json()
                assert body["response"].endswith("heard 3 words: three little words")
        finally:
            flask_app.cosmo.close()
    trace = [s for s in bus.signals if s.trace_id == body["trace_id"]]
    assert [s.type for s in trace] == [T.TASK, *[T.THOUGHT_DELTA] * 3, T.AGENT_OUTPUT]
    origin = {p.signal.type: p.origin for p in bus.published() if p.signal.trace_id == body["trace_id"]}
    assert origin[T.TASK] != origin[T.AGENT_OUTPUT], "two connections, two event loops, one bus"
