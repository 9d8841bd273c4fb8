"""A plain WSGI app on the blocking facade, for gunicorn (sync or gthread workers, with or without --preload).

    SYNAPSE_URL=cosmo://127.0.0.1:7070 gunicorn -w 2 -b 127.0.0.1:8000 \
        --chdir examples/wsgi wsgi_app:application

* ``POST /ask``   {"prompt": "..."} → {"response": "...", "pid": <gunicorn worker pid>}
* ``GET /status`` this process's facade: pid, whether its portal runs, the portal thread's id

The module-level facade is created at import (in the gunicorn master with
``--preload``) and connects on the first request in each worker.  Set
``COSMO_START_AT_IMPORT=1`` to connect at import instead, which with ``--preload``
means in the master before it forks: the workers still work, each rebuilding its
own portal and connection on first use.  (Lazy is the better default.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from cosmonapse import DispatchTimeout, SignalType
from cosmonapse_sync import SyncDendrite

SYNAPSE_URL = os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070")
NAMESPACE = os.environ.get("COSMO_NAMESPACE", "api-demo")
TIMEOUT_S = float(os.environ.get("ASK_TIMEOUT_S", "30"))

cosmo = SyncDendrite(SYNAPSE_URL, namespace=NAMESPACE, dendrite_id="wsgi-orchestrator")
IMPORT_PID = os.getpid()
if os.environ.get("COSMO_START_AT_IMPORT") == "1":
    cosmo.start()

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _ask(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
    except ValueError:
        return _json(start_response, "400 Bad Request", {"error": "body must be JSON"})
    prompt = str(body.get("prompt") or "")
    if not prompt:
        return _json(start_response, "400 Bad Request", {"error": "prompt required"})
    try:
        reply = cosmo.dispatch_and_wait(neuron="worker", input={"prompt": prompt}, timeout_s=TIMEOUT_S)
    except DispatchTimeout as exc:
        return _json(start_response, "504 Gateway Timeout", {"error": str(exc)})
    if reply.type is SignalType.ERROR:
        return _json(start_response, "502 Bad Gateway", {"error": reply.payload.get("message")})
    out = {"response": reply.payload["output"]["response"], "trace_id": reply.trace_id, "pid": os.getpid()}
    return _json(start_response, "200 OK", out)


def _status(start_response: StartResponse) -> list[bytes]:
    portal = cosmo.portal_thread
    return _json(
        start_response,
        "200 OK",
        {
            "pid": os.getpid(),
            "import_pid": IMPORT_PID,
            "running": cosmo.running,
            "portal_native_id": portal.native_id if portal is not None else None,
        },
    )


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if method == "POST" and path == "/ask":
        return _ask(environ, start_response)
    if method == "GET" and path == "/status":
        return _status(start_response)
    return _json(start_response, "404 Not Found", {"error": f"no route {method} {path}"})
