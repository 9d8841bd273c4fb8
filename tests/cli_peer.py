"""A worker process for the CLI and Prism tests (run as a script, not collected).

python tests/cli_peer.py URL NAMESPACE [asyncio|trio]
    hosts three Axons and prints "ready" once they are REGISTERed; exits 0 on SIGTERM:
    * "writer" (write, text): streams its words as THOUGHT_DELTAs, calls a tool
      (TOOL_CALL / TOOL_RESULT with ``tool_name``), answers {"response": ...};
      input {"fail": "why"} raises instead (ERROR);
    * "asker" (ask): asks a CLARIFICATION, or answers the re-dispatched TASK;
    * "guard" (guard): asks a PERMISSION, or answers the re-dispatched TASK.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, NeuronContext, SignalType, connect_synapse


async def writer(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if "fail" in input:
        raise RuntimeError(str(input["fail"]))
    words = str(input.get("prompt", "")).split()
    for seq, word in enumerate(words):
        await ctx.emit_thought_delta(word + " ", seq=seq)
    if input.get("tool"):
        args = {"text": input.get("prompt", "")}
        await ctx.emit(
            SignalType.TOOL_CALL,
            {"tool": "count", "tool_name": "word_counter", "args": args, "call_id": "c1"},
        )
        await ctx.emit_tool_result("count", result={"words": len(words)}, call_id="c1")
    return {"response": f"{len(words)} words: {input.get('prompt', '')}"}


async def asker(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if "clarification" in input:
        return {"answer_was": input["clarification"].get("answer")}
    return {"__clarification__": True, "question": "Which unit, C or F?"}


async def guard(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if "permission" in input:
        return {"granted": input["permission"].get("granted")}
    return {"__permission__": True, "action": "delete /tmp/scratch", "reason": "cleanup"}


async def main(url: str, namespace: str) -> None:
    synapse = await connect_synapse(url)
    try:
        d = Dendrite(synapse=synapse, namespace=namespace, role="worker", dendrite_id="cli-peer")
        d.attach_axon(Axon("writer", writer, ["write", "text"]))
        d.attach_axon(Axon("asker", asker, ["ask"]))
        d.attach_axon(Axon("guard", guard, ["guard"]))
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with d:
                print("ready", flush=True)
                async for _ in signals:
                    break
    finally:
        await synapse.close()
    print("peer stopped", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend=(sys.argv[3:] or ["asyncio"])[0])
