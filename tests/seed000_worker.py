"""Seed 000's worker.py, with the Hugging Face endpoint played by the kit's FakeLLM (no network).

    SYNAPSE_URL=cosmo://127.0.0.1:PORT python tests/seed000_worker.py [asyncio|trio]

The model streams its answer token by token and asks for one tool call
(``word_count``), which the Neuron runs: the orchestrator sees THOUGHT_DELTAs,
TOOL_CALL and TOOL_RESULT, then AGENT_OUTPUT.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

from cosmonapse import Axon, Dendrite, Neuron, connect_synapse
from cosmonapse.testing import FakeLLM, LLMReply, LLMToolCall

SYNAPSE_URL = os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070")
ANSWER = "A Dendrite is the only component that touches the Synapse."


def word_count(text: str) -> dict[str, Any]:
    return {"words": len(text.split())}


async def main() -> None:
    reply = LLMReply(text=ANSWER, tool_calls=[LLMToolCall("word_count", {"text": ANSWER}, id="call_1")])
    neuron = Neuron(
        source="huggingface",
        endpoint="https://router.huggingface.co",
        model="meta-llama/Llama-3.1-8B-Instruct",
        api_key="hf_test",
        use_chat_api=True,
        max_new_tokens=256,
        stream=True,
        tools={"word_count": word_count},
        transport=FakeLLM(default=reply),
    )
    axon = Axon(neuron_id="worker", neuron_fn=neuron, capabilities=["text-generation", "chat"])
    synapse = await connect_synapse(SYNAPSE_URL)
    dendrite = Dendrite(synapse=synapse, namespace="api-demo", dendrite_id="worker")
    dendrite.attach_axon(axon)
    try:
        async with dendrite:
            print("worker ready", flush=True)
            await anyio.sleep_forever()
    finally:
        await synapse.close()


if __name__ == "__main__":
    try:
        anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
    except KeyboardInterrupt:
        pass
