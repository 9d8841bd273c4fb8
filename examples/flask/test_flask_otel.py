"""docs/observability.md's example, end to end: one trace from an HTTP client through the Flask app
(gunicorn), the ``cosmo://`` dev bus and the worker process, read back from what the OTLP/HTTP
exporters of both processes actually sent (a small OTLP receiver stands in for the collector)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from cosmonapse_sync.testing import ChildProcess, dev_bus, gunicorn

HERE = Path(__file__).resolve().parent
otlp = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")


class Receiver:
    """An OTLP/HTTP trace endpoint (protobuf): keeps every span it is sent, by service."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = otlp.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                reply = otlp.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: Any) -> None:
        found = []
        for rs in request.resource_spans:
            service = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "?"
            )
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    found.append(
                        {
                            "service": service,
                            "name": sp.name,
                            "trace_id": sp.trace_id.hex(),
                            "span_id": sp.span_id.hex(),
                            "parent_id": sp.parent_span_id.hex() or None,
                        }
                    )
        with self.changed:
            self.spans += found
            self.changed.notify_all()

    def wait_for(self, check: Any, timeout_s: float) -> list[dict[str, Any]]:
        with self.changed:
            if not self.changed.wait_for(lambda: check(self.spans), timeout_s):
                raise TimeoutError(f"spans received so far: {self.spans}")
            return list(self.spans)

    def __enter__(self) -> Receiver:
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def descends(span: dict[str, Any], ancestor: dict[str, Any], spans: list[dict[str, Any]]) -> bool:
    by_id = {s["span_id"]: s for s in spans}
    current: dict[str, Any] | None = span
    for _ in range(len(spans)):
        if current is None or current["parent_id"] is None:
            return False
        if current["parent_id"] == ancestor["span_id"]:
            return True
        current = by_id.get(current["parent_id"])
    return False


@pytest.mark.slow
def test_one_trace_from_the_http_client_to_the_worker(receiver: Receiver) -> None:
    trace_id, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    task_span = "process cosmonapse.api-demo.TASK"
    with dev_bus("api-demo") as url:
        base_env = {
            "SYNAPSE_URL": url,
            "COSMO_NAMESPACE": "api-demo",
            "ASK_TIMEOUT_S": "10",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon (the test waits for the spans)
        }
        worker_env = {**base_env, "OTEL_SERVICE_NAME": "worker"}
        app_env = {**base_env, "OTEL_SERVICE_NAME": "flask-app"}
        worker = ChildProcess([sys.executable, str(HERE / "worker.py")], ready="worker ready", env=worker_env)
        with worker as w:
            app = gunicorn("flask_app:app", chdir=HERE, workers=1, worker_class="gthread", env=app_env)
            with app as (base, server):
                reply = httpx.post(
                    f"{base}/ask",
                    json={"prompt": "trace me please"},
                    headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
                    timeout=30,
                )
                assert reply.status_code == 200, reply.text

                def complete(spans: list[dict[str, Any]]) -> bool:
                    names = {(s["service"], s["name"]) for s in spans if s["trace_id"] == trace_id}
                    wanted = {("flask-app", "POST /ask"), ("worker", task_span), ("worker", "neuron worker")}
                    return wanted <= names

                spans = receiver.wait_for(complete, 30)
                assert server.stop() == 0
                assert "Traceback" not in server.output, server.output
            assert w.stop() == 0
    ours = [s for s in spans if s["trace_id"] == trace_id]
    request = next(s for s in ours if s["name"] == "POST /ask")
    assert request["parent_id"] == client_span, "the request span continues the client's traceparent"
    dispatch = next(s for s in ours if s["name"] == "dispatch worker")
    assert dispatch["service"] == "flask-app" and dispatch["parent_id"] == request["span_id"]
    task = next(s for s in ours if s["name"] == task_span)
    assert task["service"] == "worker" and descends(task, request, ours)
    neuron = next(s for s in ours if s["name"] == "neuron worker")
    assert neuron["parent_id"] == task["span_id"]
