"""A peer process with an OpenTelemetry SDK of its own, for the cross-process telemetry tests.

    python otel_peer.py worker|answerer BUS_URL NAMESPACE SPANS_FILE METRICS_FILE

It sets the *global* providers (as an app would), writes every span it ends as a
JSON line to SPANS_FILE, and on SIGTERM writes its metrics to METRICS_FILE.

* ``worker`` hosts ``echo``; ``flaky`` (a recoverable ERROR on its first call, then
  an answer); ``asker`` (a CLARIFICATION unless the input carries the answer).
* ``answerer`` watches CLARIFICATIONs and answers each one *outside* the handler,
  in a span of its own unrelated trace (as a web UI would, minutes later).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from otel_util import JsonLinesExporter

from cosmonapse import Axon, Dendrite, Signal
from cosmonapse.synapse.connect import make_synapse


def configure(role: str, spans_file: str) -> InMemoryMetricReader:
    resource = Resource.create({"service.name": role})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(open(spans_file, "a"), role)))  # noqa: SIM115
    trace.set_tracer_provider(tp)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource))
    return reader


def dump_metrics(reader: InMemoryMetricReader, path: str) -> None:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    value = getattr(p, "value", None)
                    value = getattr(p, "count", None) if value is None else value
                    out.setdefault(m.name, []).append([dict(p.attributes or {}), value])
    Path(path).write_text(json.dumps(out))


flaky_calls = 0


async def echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
    return input


async def flaky(input: dict[str, Any], context: Any) -> dict[str, Any]:
    global flaky_calls
    flaky_calls += 1
    if flaky_calls == 1:
        return {"__error__": True, "code": "BUSY", "message": "try again", "recoverable": True}
    return {"ok": True}


async def asker(input: dict[str, Any], context: Any) -> dict[str, Any]:
    if "clarification" in input:
        return {"answer": input["clarification"]["answer"]}
    return {"__clarification__": True, "question": "which one?"}


async def main(role: str, url: str, namespace: str) -> None:
    async with make_synapse(url) as synapse:
        if role == "worker":
            d = Dendrite(
                synapse=synapse, namespace=namespace, dendrite_id="worker", role="worker", heartbeat_s=0
            )
            for name, fn in (("echo", echo), ("flaky", flaky), ("asker", asker)):
                d.attach_axon(Axon(neuron_id=name, neuron_fn=fn))
        else:
            d = Dendrite(
                synapse=synapse, namespace=namespace, dendrite_id="answerer", role="worker", heartbeat_s=0
            )
        send, receive = anyio.create_memory_object_stream[Signal](16)
        if role == "answerer":

            @d.on_clarification
            async def remember(sig: Signal) -> None:
                await send.send(sig)  # answered later, by the main task: not inside this handler

        async with d, anyio.create_task_group() as tg:

            async def answer_them() -> None:
                tracer = trace.get_tracer("answerer-ui")
                async for question in receive:
                    with tracer.start_as_current_span("ui request"):
                        await d.answer_clarification(question, answer="the blue one")
                    print("answered", question.id, flush=True)

            tg.start_soon(answer_them)
            print(f"{role} ready", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    role, url, namespace, spans_file, metrics_file = sys.argv[1:6]
    reader = configure(role, spans_file)
    anyio.run(main, role, url, namespace)
    dump_metrics(reader, metrics_file)
    print(f"{role} stopped", flush=True)
