"""Seed 000's Flask orchestrator, on the blocking facade instead of a hand-made loop thread.

    SYNAPSE_URL=cosmo://127.0.0.1:7070 gunicorn -k gthread --threads 8 -w 2 -b 127.0.0.1:5000 \
        --chdir examples/flask flask_app:app

What changed from the seed: no thread at import, no ``time.sleep(0.5)``, no
``run_coroutine_threadsafe(...).result(timeout=32)``.  The facade starts its
event loop thread on the first request (in each gunicorn worker, after fork),
and when ``timeout_s`` runs out the work is cancelled and its trace STOPped
before the 504 goes out.

* ``POST /ask``            {"prompt": "..."} → {"response": "...", "trace_id": "..."}
* ``POST /ask/stream``     the same, as server-sent events: every Signal of the trace until FINAL
* ``GET /stream/<trace>``  watch a trace someone else started, until its reply
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request, stream_with_context

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # otel_setup.py beside us, however we load
import otel_setup

from cosmonapse import WAIT_TYPES, DispatchTimeout, PathwayTimeout, Signal, SignalType
from cosmonapse_sync import SyncDendrite, SyncPathway

SYNAPSE_URL = os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070")
NAMESPACE = os.environ.get("COSMO_NAMESPACE", "api-demo")
TIMEOUT_S = float(os.environ.get("ASK_TIMEOUT_S", "30"))

otel_setup.configure("flask-app")  # OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set
app = Flask(__name__)

# One facade per process, shared by every request thread.  Constructing it does no I/O.
cosmo = SyncDendrite(SYNAPSE_URL, namespace=NAMESPACE, dendrite_id="flask-orchestrator")


def _prompt() -> tuple[str, dict[str, str]]:
    body = request.get_json(silent=True) or {}
    extra = {"trace_id": str(body["trace_id"])} if body.get("trace_id") else {}
    return str(body.get("prompt") or ""), extra


@app.post("/ask")
@otel_setup.traced
def ask() -> tuple[Response, int] | Response:
    prompt, extra = _prompt()
    if not prompt:
        return jsonify(error="prompt required"), 400
    try:
        reply = cosmo.dispatch_and_wait(
            neuron="worker", input={"prompt": prompt}, timeout_s=TIMEOUT_S, **extra
        )
    except DispatchTimeout as exc:  # the work was cancelled and STOPped already
        return jsonify(error=str(exc)), 504
    if reply.type is SignalType.ERROR:
        return jsonify(error=reply.payload.get("message"), trace_id=reply.trace_id), 502
    return jsonify(response=reply.payload["output"]["response"], trace_id=reply.trace_id)


@app.post("/ask/stream")
def ask_stream() -> tuple[Response, int] | Response:
    prompt, extra = _prompt()
    if not prompt:
        return jsonify(error="prompt required"), 400
    pathway = cosmo.dispatch(neuron="worker", input={"prompt": prompt}, finalize=True, **extra)
    return Response(stream_with_context(_events(pathway, until=None)), mimetype="text/event-stream")


@app.get("/stream/<trace_id>")
def stream(trace_id: str) -> Response:
    pathway = cosmo.observe_pathway(trace_id)
    return Response(stream_with_context(_events(pathway, until=WAIT_TYPES)), mimetype="text/event-stream")


def _event(sig: Signal) -> str:
    who = sig.directed.id if sig.directed else None
    data = json.dumps({"type": sig.type.value, "from": who, "payload": sig.payload})
    return f"event: {sig.type.value}\nid: {sig.id}\ndata: {data}\n\n"


def _events(pathway: SyncPathway, until: frozenset[SignalType] | None) -> Iterator[str]:
    """SSE for every Signal of the trace; ends when the Pathway closes (FINAL/ERROR) or at *until*."""
    finished = False
    try:
        yield f": trace {pathway.trace_id}\n\n"  # the Pathway is open: nothing from here on is missed
        for sig in pathway.signals(idle_timeout_s=TIMEOUT_S):
            yield _event(sig)
            if until is not None and sig.type in until:
                break
        finished = True
    except PathwayTimeout:
        yield 'event: timeout\ndata: {"error": "no Signal within the timeout"}\n\n'
    finally:
        if not finished and pathway.role == "originator":
            pathway.stop("the client went away")  # do not leave the work running for nobody
        pathway.close()


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")), threaded=True)
