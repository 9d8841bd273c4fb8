"""A peer process for cross-process tests over cosmo:// (run as a script, not collected).

python tests/dev_peer.py worker URL NAMESPACE
    hosts Axon "echo" (capability "echo") on cosmo:// or nats://, reconnecting
    quickly; prints "ready", then one line per TASK that asks to sleep
    ("started <tag>"); input {"counts": true} answers how many sleeping TASKs
    started, finished and were cancelled; exits 0 on SIGTERM.
python tests/dev_peer.py orchestrator URL NAMESPACE COUNT
    dispatches COUNT addressed and COUNT capability-routed TASKs, prints
    "ok <n> <pid of the worker>" for each reply, exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse

#: What this worker's TASKs that asked to sleep did: started, then finished or cancelled.
COUNTS = {"started": 0, "finished": 0, "cancelled": 0}


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if input.get("counts"):
        return {"counts": dict(COUNTS), "pid": os.getpid()}
    if "sleep" in input:
        COUNTS["started"] += 1
        print(f"started {input.get('tag')}", flush=True)
        try:
            await anyio.sleep(input["sleep"])
        except anyio.get_cancelled_exc_class():
            COUNTS["cancelled"] += 1
            raise
        COUNTS["finished"] += 1
    return {"echo": input, "pid": os.getpid()}


def quick_reconnect(url: str) -> dict[str, Any]:
    """Reconnect options that keep outages short in tests (cosmo:// or nats://)."""
    if url.startswith("nats"):
        return {"reconnect_wait": 0.02, "max_reconnect_wait": 0.2}
    return {"reconnect_delay": 0.02, "reconnect_max_delay": 0.2}


async def worker(url: str, namespace: str) -> None:
    synapse = await connect_synapse(url, **quick_reconnect(url))
    try:
        dendrite = Dendrite(
            synapse=synapse, namespace=namespace, role="worker", dendrite_id=f"worker-{os.getpid()}"
        )
        dendrite.attach_axon(Axon("echo", echo, ["echo"]))
        async with dendrite:
            flush = getattr(synapse, "flush", None)
            if flush is not None:
                await flush()  # NATS: our subscriptions are live at the server before "ready"
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                print("ready", flush=True)
                async for _ in signals:
                    break
    finally:
        await synapse.close()


async def orchestrator(url: str, namespace: str, count: int) -> None:
    synapse = await connect_synapse(url)
    try:
        async with Dendrite(synapse=synapse, namespace=namespace, dendrite_id="orch") as orch:
            for n in range(count):
                for target in ({"neuron": "echo"}, {"capabilities": ["echo"]}):
                    reply = await orch.dispatch_and_wait(**target, input={"n": n}, timeout_s=10)
                    output = reply.payload["output"]
                    assert output["echo"] == {"n": n}, output
                    print(f"ok {n} {output['pid']}", flush=True)
    finally:
        await synapse.close()


if __name__ == "__main__":
    role, url, namespace = sys.argv[1:4]
    if role == "worker":
        anyio.run(worker, url, namespace)
    else:
        anyio.run(orchestrator, url, namespace, int(sys.argv[4]))
