"""The main demo: an in-process worker and orchestrator on a MemorySynapse.

    python -m cosmonapse.demo ["your prompt"]

With ``HF_TOKEN`` (or ``COSMONAPSE_LLM_BASE_URL`` for a local OpenAI-compatible
server) set, the worker's Neuron is an LLM; otherwise it is a small function, so
the demo runs on a fresh machine with no token and no network.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from .axon import Axon
from .context import NeuronContext
from .dendrite import Dendrite
from .signal import Signal, SignalType
from .synapse.memory import MemorySynapse


async def word_counter(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
    """The no-token Neuron: streams its thinking, then answers."""
    prompt = str(input.get("prompt", ""))
    words = prompt.split()
    for word in words:
        await context.emit_thought_delta(word + " ")
    return {"response": f"{len(words)} words, {len(prompt)} characters: {prompt!r}", "meta": {}}


def _pick_neuron() -> tuple[Any, str]:
    try:
        from .neuron import default_demo_neuron  # type: ignore[attr-defined]
    except ImportError:
        return word_counter, "function"
    llm = default_demo_neuron(stream=True)
    return (llm, "llm") if llm is not None else (word_counter, "function")


async def run_demo(prompt: str) -> Signal:
    neuron_fn, kind = _pick_neuron()
    async with MemorySynapse() as synapse:
        worker = Dendrite(synapse=synapse, namespace="demo", role="worker", dendrite_id="worker")
        worker.attach_axon(Axon(neuron_id="greeter", neuron_fn=neuron_fn, capabilities=["chat", "greet"]))
        orchestrator = Dendrite(synapse=synapse, namespace="demo", dendrite_id="orchestrator")

        @orchestrator.on_thought_delta
        def show_delta(sig: Signal) -> None:
            print(sig.payload.get("delta", ""), end="", flush=True)

        async with worker, orchestrator:
            print(f"[demo] worker Neuron: {kind}")
            async with await orchestrator.dispatch(
                neuron="greeter", input={"prompt": prompt}, scope="terminal"
            ) as pathway:
                reply = await pathway.wait(timeout_s=60.0)
            print()
            if reply.type is SignalType.ERROR:
                print(f"[{reply.type.value}] {reply.payload.get('code')}: {reply.payload.get('message')}")
            else:
                result = reply.payload["result"]
                print(f"[{reply.type.value}] {result.get('response', result)}")
            return reply


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prompt = " ".join(args) or "Say hello to a project called Cosmonapse in one line."
    reply = anyio.run(run_demo, prompt)
    return 1 if reply.type is SignalType.ERROR else 0


if __name__ == "__main__":
    raise SystemExit(main())
