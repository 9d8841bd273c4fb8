"""Terminal 3: send one prompt to the worker and print the streamed answer.

python examples/bus/orchestrator.py "What is a Dendrite?"
"""

from __future__ import annotations

import os
import sys

import anyio

from cosmonapse import Dendrite, SignalType, connect_synapse


async def main(prompt: str) -> int:
    synapse = await connect_synapse(os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070"))
    try:
        orch = Dendrite(synapse=synapse, namespace="api-demo", dendrite_id="orchestrator")
        async with orch, await orch.dispatch(neuron="worker", input={"prompt": prompt}) as pathway:
            async for sig in pathway:
                if sig.type is SignalType.THOUGHT_DELTA:
                    print(sig.payload.get("delta", ""), end="", flush=True)
                elif sig.type is SignalType.AGENT_OUTPUT:
                    print(f"\n[{sig.type.value}] {sig.payload['output'].get('response')}")
                    return 0
                elif sig.type is SignalType.ERROR:
                    print(f"\n[ERROR] {sig.payload.get('code')}: {sig.payload.get('message')}")
                    return 1
    finally:
        await synapse.close()
    return 1


if __name__ == "__main__":
    text = " ".join(sys.argv[1:]) or "What is a Dendrite?"
    raise SystemExit(anyio.run(main, text, backend=os.environ.get("COSMO_BACKEND", "asyncio")))
