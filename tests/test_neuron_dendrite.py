"""End to end: an LLM Neuron behind an Axon on a Dendrite, seen from the orchestrator's Pathway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from llm_servers import FakeLLM, LocalServer, Reply, Request, serve

from cosmonapse import Axon, Signal, SignalType
from cosmonapse.neuron import Neuron
from cosmonapse.testing.harness import memory_cluster, running_task_names

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def no_leaked_tasks_but_the_servers(srv: LocalServer) -> AsyncIterator[None]:
    """Like the harness's leak check, but the loopback server's own connection tasks are allowed."""
    before = set(running_task_names())
    yield
    leaked = {tid: name for tid, name in running_task_names().items() if tid not in before}
    leaked = {tid: name for tid, name in leaked.items() if tid not in srv.connection_tasks}
    assert not leaked, f"tasks left running: {sorted(leaked.values())}"


async def test_thought_deltas_reach_the_pathway_before_agent_output() -> None:
    async with serve(FakeLLM("streamed across the bus")) as srv:
        neuron = Neuron("huggingface", endpoint=srv.url, use_chat_api=True, stream=True)
        axon = Axon(neuron_id="llm", neuron_fn=neuron, capabilities=["chat"])
        async with no_leaked_tasks_but_the_servers(srv), memory_cluster(axons=[axon], check_leaks=False) as c:
            seen: list[Signal] = []
            with anyio.fail_after(10):
                async with await c.orchestrator.dispatch(neuron="llm", input={"prompt": "go"}) as pw:
                    async for sig in pw:
                        seen.append(sig)
                        if sig.type in (SignalType.AGENT_OUTPUT, SignalType.ERROR):
                            break
        assert neuron.http._client is None, "the Dendrite's stop closed the Neuron's pooled client"
    types = [s.type for s in seen]
    assert types[-1] is SignalType.AGENT_OUTPUT, types
    deltas = [s.payload["delta"] for s in seen if s.type is SignalType.THOUGHT_DELTA]
    assert deltas == ["streamed", " across", " the", " bus"]
    assert types.index(SignalType.THOUGHT_DELTA) < types.index(SignalType.AGENT_OUTPUT)
    reply = seen[-1]
    assert reply.payload["output"]["response"] == "streamed across the bus"
    assert all(s.parent_id == reply.parent_id for s in seen), "every Signal hangs off the TASK"


async def test_a_rejected_key_becomes_a_clear_error_signal_without_the_key() -> None:
    secret = "sk-live-DoNotLeakMe-424242"

    async def reject(req: Request) -> Reply:
        return Reply.json({"error": {"message": f"bad key {secret}"}}, status=401)

    async with serve(reject) as srv:
        neuron = Neuron("groq", endpoint=srv.url, model="m", api_key=secret)
        axon = Axon(neuron_id="llm", neuron_fn=neuron)
        async with no_leaked_tasks_but_the_servers(srv), memory_cluster(axons=[axon], check_leaks=False) as c:
            reply = await c.orchestrator.dispatch_and_wait(neuron="llm", input={"prompt": "x"}, timeout_s=10)
    assert reply.type is SignalType.ERROR
    assert reply.payload["code"] == "NEURON_EXCEPTION"
    message = reply.payload["message"]
    assert message.startswith("NeuronAuthError: groq rejected the API key (HTTP 401): check GROQ_API_KEY")
    assert secret not in message
