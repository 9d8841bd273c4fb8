"""Seed 001's smallest program with a plain-function Neuron: runs on asyncio and on trio.

python examples/hello_memory.py            # asyncio
python examples/hello_memory.py trio       # trio
"""

from __future__ import annotations

import sys
from typing import Any

from cosmonapse import Axon, Dendrite, MemorySynapse, NeuronContext


def greeter(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    """A plain (sync) function is a Neuron too: it runs in a worker thread."""
    prompt = input.get("prompt", "")
    return {"response": f"Hello! You said: {prompt}", "meta": {"trace": context.trace_id}}


async def main() -> str:
    synapse = MemorySynapse()
    await synapse.connect()
    try:
        axon = Axon(neuron_id="greeter", neuron_fn=greeter, capabilities=["chat", "greet"])
        worker = Dendrite(synapse=synapse, namespace="demo", role="worker")
        worker.attach_axon(axon)
        orchestrator = Dendrite(synapse=synapse, namespace="demo")
        async with worker, orchestrator:
            reply = await orchestrator.dispatch_and_wait(
                neuron="greeter",
                input={"prompt": "Say hello to a project called Cosmonapse in one line."},
                timeout_s=30.0,
            )
            line = f"[{reply.type.value}] {reply.payload['output']['response']}"
            print(line)
            return line
    finally:
        await synapse.close()


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    if backend == "trio":
        import trio

        trio.run(main)
    else:
        import asyncio

        asyncio.run(main())
