"""OpenTelemetry for the example, on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

    pip install 'cosmonapse[otel]' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=flask-app ...

The app configures the SDK (here: OTLP over HTTP, batched); cosmonapse needs nothing
more: its spans join the trace of whatever span is current when it is called.
``traced`` gives each Flask request a SERVER span that continues the caller's
``traceparent`` header; in production ``opentelemetry-instrumentation-flask`` does
that (and more) — these few lines keep the example's dependencies small.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENABLED = bool(
    os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
)


def configure(service_name: str) -> None:
    """Set the global TracerProvider: OTLP/HTTP to the endpoint the OTEL_* variables name."""
    if not ENABLED:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_EXPORTER_* vars
    trace.set_tracer_provider(provider)  # flushed at exit (the provider's atexit hook)


def traced(view: F) -> F:
    """A SERVER span around a Flask view, continuing the request's ``traceparent``."""
    if not ENABLED:
        return view
    from flask import request
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = trace.get_tracer("examples.flask")

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        route = request.url_rule.rule if request.url_rule is not None else request.path
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),  # case-insensitive look-ups
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route, "url.path": request.path},
        ) as span:
            result = view(*args, **kwargs)
            status = result[1] if isinstance(result, tuple) else getattr(result, "status_code", 200)
            span.set_attribute("http.response.status_code", int(status))
            if int(status) >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return result

    return wrapper  # type: ignore[return-value]
