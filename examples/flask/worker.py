"""The shared worker (seed 000, step 00): one Neuron named "worker" on the cosmo:// bus.

    SYNAPSE_URL=cosmo://127.0.0.1:7070 python examples/flask/worker.py

By default the Neuron is a plain function (it runs in one of the facade's worker
threads and streams each word back as a THOUGHT_DELTA before answering).  With
``WORKER_NEURON=llm`` it is the LLM Neuron from ``cosmonapse.neuron`` configured
from ``HF_TOKEN`` or ``COSMONAPSE_LLM_BASE_URL``.  Every framework example talks
to this same worker.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import otel_setup

from cosmonapse import Axon
from cosmonapse_sync import SyncDendrite, SyncNeuronContext

SYNAPSE_URL = os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070")
NAMESPACE = os.environ.get("COSMO_NAMESPACE", "api-demo")


def answer(input: dict[str, Any], context: SyncNeuronContext) -> dict[str, Any]:
    """The no-token Neuron: blocking code is fine here, it runs in a worker thread."""
    prompt = str(input.get("prompt", ""))
    words = prompt.split()
    for word in words:
        context.emit_thought_delta(word + " ")
    return {"response": f"{len(words)} words: {prompt}"}


def pick_neuron() -> tuple[Any, str]:
    if os.environ.get("WORKER_NEURON", "function") != "llm":
        return answer, "function"
    from cosmonapse.neuron import default_demo_neuron

    llm = default_demo_neuron()
    if llm is None:
        sys.exit("WORKER_NEURON=llm needs HF_TOKEN or COSMONAPSE_LLM_BASE_URL")
    return llm, "llm"


def main() -> None:
    otel_setup.configure("worker")  # OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    neuron, kind = pick_neuron()
    worker = SyncDendrite(SYNAPSE_URL, namespace=NAMESPACE, dendrite_id="worker", role="worker")
    worker.attach_axon(Axon(neuron_id="worker", neuron_fn=neuron, capabilities=["text-generation", "chat"]))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with worker:  # connects and REGISTERs "worker"; leaving the block DEREGISTERs it
        print(f"worker ready ({kind} Neuron) on {SYNAPSE_URL} namespace {NAMESPACE}", flush=True)
        stop.wait()
    print("worker stopped", flush=True)


if __name__ == "__main__":
    main()
