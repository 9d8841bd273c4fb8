"""Terminal 2: a worker on the dev bus (seed 000's worker.py).

    python examples/bus/worker.py

Its Neuron is an LLM when HF_TOKEN or COSMONAPSE_LLM_BASE_URL is set, else a
function that answers without any network.  SYNAPSE_URL picks the bus
(default cosmo://127.0.0.1:7070; nats://... works too).
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse
from cosmonapse.neuron import default_demo_neuron


async def answer(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    """The no-token Neuron: streams the prompt back word by word, then replies."""
    prompt = str(input.get("prompt", ""))
    for word in prompt.split():
        await context.emit_thought_delta(word + " ")
    return {"response": f"worker {os.getpid()} heard {len(prompt.split())} words: {prompt}", "meta": {}}


async def main() -> None:
    neuron = default_demo_neuron(stream=True) or answer
    synapse = await connect_synapse(os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070"))
    try:
        worker = Dendrite(synapse=synapse, namespace="api-demo", role="worker", dendrite_id="worker")
        caps = ["text-generation", "chat"]
        worker.attach_axon(Axon(neuron_id="worker", neuron_fn=neuron, capabilities=caps))
        async with worker:
            print("worker ready", flush=True)
            await anyio.sleep_forever()
    finally:
        await synapse.close()


if __name__ == "__main__":
    try:
        anyio.run(main, backend=os.environ.get("COSMO_BACKEND", "asyncio"))
    except KeyboardInterrupt:
        pass
