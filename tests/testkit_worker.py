"""A worker for the conformance tests (run as a script, not collected).

    COSMO_SYNAPSE_URL=cosmo://... COSMO_NAMESPACE=ns python tests/testkit_worker.py

Hosts "echo" (capability "echo"; sleeps when the input has "sleep") and
"asker" (answers with a CLARIFICATION); heartbeats every 0.3 s; prints "ready";
DEREGISTERs and exits 0 on SIGTERM.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if "sleep" in input:
        await anyio.sleep(float(input["sleep"]))
    return {"echo": input}


async def asker(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    return {"__clarification__": True, "question": "which one?"}


async def main() -> None:
    synapse = await connect_synapse(os.environ["COSMO_SYNAPSE_URL"])
    try:
        worker = Dendrite(
            synapse=synapse, namespace=os.environ["COSMO_NAMESPACE"], role="worker", heartbeat_s=0.3
        )
        worker.attach_axon(Axon("echo", echo, ["echo"]))
        worker.attach_axon(Axon("asker", asker))
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with worker:
                print("ready", flush=True)
                async for _ in signals:
                    break
    finally:
        await synapse.close()


if __name__ == "__main__":
    anyio.run(main, backend=os.environ.get("COSMO_BACKEND", "asyncio"))
