"""A worker hosting an LLM Neuron on the dev bus (seed 000's worker.py, model from the environment).

    cosmo synapse start memory --namespace=api-demo         # terminal 1: the bus
    HF_TOKEN=hf_... python examples/llm_worker.py          # terminal 2: this worker
    # or: COSMONAPSE_LLM_BASE_URL=http://localhost:11434/v1 COSMONAPSE_LLM_MODEL=llama3 python ...

The Neuron streams: every token reaches the orchestrator's Pathway as a
THOUGHT_DELTA before the AGENT_OUTPUT.  Runs on asyncio or trio
(``COSMO_BACKEND=trio``).
"""

from __future__ import annotations

import os

import anyio

from cosmonapse import Axon, Dendrite, connect_synapse
from cosmonapse.neuron import default_demo_neuron


async def main() -> None:
    neuron = default_demo_neuron(stream=True)
    if neuron is None:
        raise SystemExit("set HF_TOKEN, or COSMONAPSE_LLM_BASE_URL (+ COSMONAPSE_LLM_MODEL), to pick a model")
    synapse = await connect_synapse(os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070"))
    try:
        worker = Dendrite(synapse=synapse, namespace="api-demo", role="worker", dendrite_id="worker")
        axon = Axon(neuron_id="worker", neuron_fn=neuron, capabilities=["text-generation", "chat"])
        worker.attach_axon(axon)
        async with worker:  # its stop closes the Neuron's HTTP pool
            print(f"worker ready: {neuron!r}")
            await anyio.sleep_forever()
    finally:
        await synapse.close()


if __name__ == "__main__":
    try:
        anyio.run(main, backend=os.environ.get("COSMO_BACKEND", "asyncio"))
    except KeyboardInterrupt:
        pass
