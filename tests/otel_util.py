"""OpenTelemetry test helpers: an SDK of the test's own (in memory), and span trees read back.

The pytest process never sets the *global* providers (other tests would see spans
and ``traceparent`` keys): ``sdk()`` pins providers with ``telemetry.use`` and
undoes it.  Peer processes set global providers and write their spans as JSON
lines (``file_exporter``), so the test reads every process's spans the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cosmonapse import telemetry


@attrs.define
class Sdk:
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[Span]:
        return [Span.of(s, "test") for s in self.exporter.get_finished_spans()]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name → [(attributes, value or histogram count)] as collected now."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        value = getattr(p, "value", None)
                        if value is None:
                            value = getattr(p, "count", None)
                        out.setdefault(m.name, []).append((dict(p.attributes or {}), value))
        return out

    def total(self, name: str, **match: Any) -> Any:
        """The sum of *name*'s points whose attributes include *match*."""
        return sum(
            v
            for attrs_, v in self.metrics().get(name, [])
            if all(attrs_.get(k) == w for k, w in match.items())
        )


@contextmanager
def sdk(service: str = "test") -> Iterator[Sdk]:
    """Providers of this test's own, pinned for cosmonapse and unpinned after."""
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    telemetry.use(tracer_provider=tp, meter_provider=mp)
    try:
        yield Sdk(tp, exporter, reader)
    finally:
        telemetry.use()
        tp.shutdown()
        mp.shutdown()


@attrs.frozen
class Span:
    """The parts of a finished span the tests look at, from any process."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    attributes: dict[str, Any]
    status: str
    service: str
    events: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  # linked span ids

    @classmethod
    def of(cls, s: ReadableSpan, service: str) -> Span:
        ctx = s.get_span_context()
        assert ctx is not None
        return cls(
            name=s.name,
            trace_id=format(ctx.trace_id, "032x"),
            span_id=format(ctx.span_id, "016x"),
            parent_id=format(s.parent.span_id, "016x") if s.parent is not None else None,
            kind=s.kind.name,
            attributes=dict(s.attributes or {}),
            status=s.status.status_code.name,
            service=service,
            events=tuple(e.name for e in s.events),
            links=tuple(format(link.context.span_id, "016x") for link in s.links),
        )

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Span:
        return cls(
            name=raw["name"],
            trace_id=raw["trace_id"],
            span_id=raw["span_id"],
            parent_id=raw["parent_id"],
            kind=raw["kind"],
            attributes=raw["attributes"],
            status=raw["status"],
            service=raw["service"],
            events=tuple(raw["events"]),
            links=tuple(raw["links"]),
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class JsonLinesExporter(SpanExporter):
    """Writes each finished span as one JSON line (a real exporter's output a test can read)."""

    def __init__(self, out: IO[str], service: str) -> None:
        self._out = out
        self._service = service

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for s in spans:
            self._out.write(json.dumps(Span.of(s, self._service).to_json(), default=str) + "\n")
        self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._out.flush()


def read_spans(path: Path) -> list[Span]:
    if not path.exists():
        return []
    return [Span.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def descends(span: Span, ancestor: Span, spans: Iterable[Span]) -> bool:
    """True when *ancestor* is on *span*'s parent chain (across processes: ids are global)."""
    by_id = {s.span_id: s for s in spans}
    seen: set[str] = set()
    current: Span | None = span
    while current is not None and current.parent_id is not None and current.span_id not in seen:
        seen.add(current.span_id)
        if current.parent_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_id)
    return False


def named(spans: Iterable[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]
