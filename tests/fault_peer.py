"""A worker process for the fault suite (run as a script, not collected).

python tests/fault_peer.py URL NAMESPACE [asyncio|trio]
    connects to URL (cosmo:// or nats://, reconnecting quickly), hosts Axon
    "echo" (capability "echo") and prints "ready"; a TASK whose input has
    "sleep" prints "started <tag>" first, then sleeps that long.  Exits 0 on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if "sleep" in input:
        print(f"started {input.get('tag')}", flush=True)
        await anyio.sleep(input["sleep"])  # allowed: the slow work the fault tests interrupt
    return {"echo": input, "pid": os.getpid()}


async def worker(url: str, namespace: str) -> None:
    quick = (
        {"reconnect_delay": 0.02, "reconnect_max_delay": 0.2}
        if url.startswith("cosmo")
        else {
            "reconnect_wait": 0.02,
            "max_reconnect_wait": 0.2,
        }
    )
    synapse = await connect_synapse(url, **quick)
    try:
        dendrite = Dendrite(
            synapse=synapse,
            namespace=namespace,
            role="worker",
            dendrite_id=f"worker-{os.getpid()}",
            heartbeat_s=0,
        )
        dendrite.attach_axon(Axon("echo", echo, ["echo"]))
        async with dendrite:
            flush = getattr(synapse, "flush", None)
            if flush is not None:
                await flush()  # NATS: our subscriptions are live at the server
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                print("ready", flush=True)
                async for _ in signals:
                    break
    finally:
        await synapse.close()


if __name__ == "__main__":
    anyio.run(worker, sys.argv[1], sys.argv[2], backend=(sys.argv[3:] or ["asyncio"])[0])
