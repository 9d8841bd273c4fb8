"""The instruments: every call into the OpenTelemetry API that cosmonapse makes.

Imported only once a real provider exists (``telemetry.refresh``), so nothing here
runs, or is even imported, in a process that did not configure OpenTelemetry.

Spans (messaging and GenAI semantic conventions):

* ``publish <subject>`` (PRODUCER) for Signals that start, answer or end work;
  every Signal published while a span is current carries it in ``meta``
  (``traceparent``/``tracestate``, the global propagator's keys);
* ``process <subject>`` (CONSUMER) for a TASK run on a worker and for each
  handler, callback or internal job a Signal starts, in the context the Signal
  carried;
* ``dispatch <target>`` (CLIENT) around each dispatch → reply, ``run_with_retry``
  around its attempts, ``offer`` around bidding, ``neuron <id>`` around a Neuron
  call, ``<operation> <model>`` (CLIENT) around an LLM HTTP call, ``answer`` /
  ``await`` for clarification and permission, ``rollback`` around a STOP's
  settlement.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

import anyio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, NoOpMeterProvider, Observation
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ..__about__ import __version__
from ..signal import Signal, SignalType
from ..subjects import signal_subject

__all__ = ["Instruments"]

SCOPE = "cosmonapse"
T = SignalType

#: Published Signals that get a PRODUCER span of their own; the others only carry the context.
SENT_SPANS = frozenset(
    {
        T.TASK, T.TASK_OFFER, T.BID, T.TASK_AWARDED, T.TASK_DECLINED, T.AGENT_OUTPUT, T.FINAL, T.ERROR,
        T.CLARIFICATION, T.PERMISSION, T.CLARIFICATION_ANSWER, T.PERMISSION_DECISION, T.ESCALATION,
        T.STOP, T.STOPPED, T.RECALL, T.RECALLED, T.IMPRINT, T.IMPRINTED,
    }
)  # fmt: skip
#: What answers a TASK (its outcome).
REPLY_TYPES = frozenset({T.AGENT_OUTPUT, T.FINAL, T.ERROR, T.CLARIFICATION, T.PERMISSION})
#: Seconds: latency buckets from half a millisecond (in-process) to two minutes (an LLM).
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
_EMPTY = Context()
_SYSTEMS = {"MemorySynapse": "memory", "DevSynapse": "cosmo", "NatsSynapse": "nats"}
#: ``gen_ai.provider.name`` for our sources, where the conventions name the provider.
_PROVIDERS = {"mistral": "mistral_ai", "huggingface": "huggingface", "tgi": "huggingface"}


class Host(Protocol):
    """What the instruments read from a Dendrite's core."""

    @property
    def dendrite_id(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def synapse(self) -> Any: ...

    @property
    def tombstones(self) -> Container[str]: ...


class _TaskRun:
    """The TASK the current job runs, and how it was answered (set by the reply's publish)."""

    __slots__ = ("code", "outcome", "task")

    def __init__(self, task: Signal) -> None:
        self.task = task
        self.outcome: str | None = None
        self.code: str | None = None


_TASK: ContextVar[_TaskRun | None] = ContextVar("cosmonapse_otel_task", default=None)


def _system(synapse: Any) -> str:
    name = type(synapse).__name__
    return _SYSTEMS.get(name) or str(getattr(synapse, "scheme", None) or name.removesuffix("Synapse").lower())


def _cancelled(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())


def _end(span: Span, exc: BaseException | None) -> None:
    """End *span*; an exception other than cancellation is recorded with status ERROR."""
    if exc is not None:
        if _cancelled(exc):
            span.set_attribute("cosmonapse.cancelled", True)
        else:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
            span.set_attribute("error.type", type(exc).__qualname__)
    span.end()


def _is_valid(ctx: Context) -> bool:
    return trace.get_current_span(ctx).get_span_context().is_valid


def extract(meta: Mapping[str, Any]) -> Context:
    """The trace context an envelope's ``meta`` carries (an empty context when none)."""
    if meta and "traceparent" in meta:
        return propagate.extract(meta, context=Context())
    return _EMPTY


def _stamp(sig: Signal, ctx: Context) -> None:
    """Put *ctx*'s trace context into ``sig.meta`` (a new dict: the caller's is never changed)."""
    meta = dict(sig.meta)
    propagate.inject(meta, context=ctx)
    object.__setattr__(sig, "meta", meta)  # the Signal becomes what goes on the wire


def _signal_attributes(sig: Signal, subject: str, system: str, operation: str, kind: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": subject,
        "messaging.operation.type": kind,
        "messaging.operation.name": operation,
        "messaging.message.id": sig.id,
        "messaging.message.conversation_id": sig.trace_id,
        "cosmonapse.signal.type": sig.type.value,
        "cosmonapse.trace_id": sig.trace_id,
    }
    if sig.neuron:
        attrs["cosmonapse.neuron"] = sig.neuron
    if sig.parent_id:
        attrs["cosmonapse.parent_id"] = sig.parent_id
    return attrs


def _error_code(sig: Signal) -> str | None:
    return str(sig.payload.get("code") or "ERROR") if sig.type is T.ERROR else None


class _Scope:
    """A span made current for a ``with`` block; ``reply``/``note`` add what became known inside."""

    __slots__ = ("_on_end", "_parent", "_token", "span")

    def __init__(
        self, span: Span, parent: Context | None, on_end: Callable[[BaseException | None], None] | None
    ) -> None:
        self.span = span
        self._parent = parent
        self._on_end = on_end
        self._token: Any = None

    def __enter__(self) -> _Scope:
        self._token = otel_context.attach(trace.set_span_in_context(self.span, self._parent))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if self._on_end is not None:
                self._on_end(exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            _end(self.span, exc)

    def reply(self, sig: Signal) -> Signal:
        self.span.set_attribute("cosmonapse.outcome", sig.type.value)
        self.span.set_attribute("cosmonapse.reply_id", sig.id)
        code = _error_code(sig)
        if code is not None:
            self.span.set_attribute("error.type", code)
            self.span.set_status(Status(StatusCode.ERROR, str(sig.payload.get("message") or code)[:256]))
        return sig

    def note(self, **attributes: Any) -> None:
        for key, value in attributes.items():
            if value is not None:
                self.span.set_attribute(key, value)

    def headers(self) -> dict[str, str] | None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier or None


class _Timed:
    """A ``with`` block that only records metrics (tracing is off, metering on)."""

    __slots__ = ("_on_end",)

    def __init__(self, on_end: Callable[[BaseException | None], None]) -> None:
        self._on_end = on_end

    def __enter__(self) -> _Timed:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._on_end(exc)

    def reply(self, sig: Signal) -> Signal:
        return sig

    def note(self, **attributes: Any) -> None:
        return None

    def headers(self) -> dict[str, str] | None:
        return None


class Instruments:
    """Spans and metrics for one pair of providers (either may be None: that half is off)."""

    def __init__(
        self,
        tracer_provider: Any,
        meter_provider: Any,
        gauges: weakref.WeakKeyDictionary[object, tuple[str, Callable[[], tuple[int, int]]]],
    ) -> None:
        self.tracing: bool = tracer_provider is not None
        self.metering: bool = meter_provider is not None
        self.tracer: trace.Tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer(
            SCOPE, __version__
        )
        meter = (meter_provider or NoOpMeterProvider()).get_meter(SCOPE, __version__)
        self._gauges = gauges
        self._systems: dict[type, str] = {}

        def histogram(name: str, unit: str, description: str) -> Any:
            try:
                return meter.create_histogram(
                    name,
                    unit=unit,
                    description=description,
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
                )
            except TypeError:  # an API older than the advisory
                return meter.create_histogram(name, unit=unit, description=description)

        self.dispatch_duration = histogram(
            "cosmonapse.dispatch.duration", "s", "dispatch → reply, by neuron or capabilities and outcome"
        )
        self.task_duration = histogram("cosmonapse.task.duration", "s", "TASKs run here, start → reply")
        self.task_outcomes = meter.create_counter(
            "cosmonapse.task.outcomes", unit="{task}", description="TASKs run here, by outcome and error code"
        )
        self.retries = meter.create_counter(
            "cosmonapse.retries", unit="{attempt}", description="dispatch attempts retried"
        )
        self.stops = meter.create_counter(
            "cosmonapse.stops", unit="{stop}", description="STOPs sent and received"
        )
        self.cancelled = meter.create_counter(
            "cosmonapse.stop.cancelled", unit="{task}", description="running TASKs cancelled by a STOP"
        )
        self.rollbacks = meter.create_counter(
            "cosmonapse.rollbacks", unit="{rollback}", description="STOP settlements that rolled back"
        )
        self.compensated = meter.create_counter(
            "cosmonapse.rollback.compensated", unit="{entry}", description="Engram entries rolled back"
        )
        self.backpressure = meter.create_counter(
            "cosmonapse.bus.backpressure", unit="{event}",
            description="publishes that waited for a full subscription buffer",
        )  # fmt: skip
        self.dropped = meter.create_counter(
            "cosmonapse.bus.dropped", unit="{signal}",
            description="Signals a network bus reader dropped (subscription over its pending limits)",
        )  # fmt: skip
        self.slow_consumers = meter.create_counter(
            "cosmonapse.devbus.slow_consumer_disconnects", unit="{connection}",
            description="dev bus connections dropped as slow consumers",
        )  # fmt: skip
        self.facade_calls = meter.create_counter(
            "cosmonapse.facade.calls",
            unit="{call}",
            description="blocking facade calls, by method and outcome",
        )
        self.facade_duration = histogram("cosmonapse.facade.duration", "s", "blocking facade calls")
        self.genai_duration = histogram("gen_ai.client.operation.duration", "s", "GenAI operation duration")
        self.genai_tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="tokens used, by type (input, output)"
        )
        meter.create_observable_gauge(
            "cosmonapse.traces.in_flight", callbacks=[self._observe(0)], unit="{trace}",
            description="traces with an open Pathway or a running TASK on this Dendrite",
        )  # fmt: skip
        meter.create_observable_gauge(
            "cosmonapse.tasks.running", callbacks=[self._observe(1)], unit="{task}",
            description="TASKs running on this Dendrite",
        )  # fmt: skip

    def _observe(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            for name, read in list(self._gauges.values()):
                try:
                    value = read()[index]
                except Exception:  # a Dendrite stopping under us: no figure this round
                    continue
                yield Observation(value, {"cosmonapse.dendrite": name})

        return observe

    def system(self, synapse: Any) -> str:
        kind = type(synapse)
        name = self._systems.get(kind)
        if name is None:
            name = self._systems[kind] = _system(synapse)
        return name

    # ------------------------------------------------------------------ logs
    def add_span_ids(self, extra: dict[str, Any]) -> None:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            extra["otel_trace_id"] = format(ctx.trace_id, "032x")
            extra["otel_span_id"] = format(ctx.span_id, "016x")

    # ------------------------------------------------------------------ the four choke points
    async def publish(self, host: Host, subject: str, sig: Signal) -> None:
        """``Core.publish``: a PRODUCER span for Signals that start or answer work; context into ``meta``."""
        run = _TASK.get()
        if (
            run is not None
            and sig.type in REPLY_TYPES
            and sig.parent_id == run.task.id
            and run.outcome is None
        ):
            run.outcome, run.code = sig.type.value, _error_code(sig)
        synapse = host.synapse
        if not self.tracing:
            await synapse.publish(subject, sig)
            return
        current = otel_context.get_current()
        if sig.type not in SENT_SPANS:
            if _is_valid(current):
                _stamp(sig, current)
            await synapse.publish(subject, sig)
            return
        parent = current
        if not _is_valid(current) and "traceparent" in sig.meta:
            parent = extract(sig.meta)  # a context the caller put in meta itself
        attrs = _signal_attributes(sig, subject, self.system(synapse), "publish", "send")
        attrs["messaging.client.id"] = host.dendrite_id
        code = _error_code(sig)
        if code is not None:
            attrs["cosmonapse.error.code"] = code
        span = self.tracer.start_span(f"publish {subject}", parent, kind=SpanKind.PRODUCER, attributes=attrs)
        _stamp(sig, trace.set_span_in_context(span, parent))
        failure: BaseException | None = None
        try:
            await synapse.publish(subject, sig)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _end(span, failure)

    async def route(self, sig: Signal, routes: Iterable[Callable[[Signal], Awaitable[None]]]) -> None:
        """``Core.route``: the Signal's own context is current while its routes run (and hand work on)."""
        if not self.tracing:
            for route in routes:
                await route(sig)
            return
        token = otel_context.attach(extract(sig.meta))
        try:
            for route in routes:
                await route(sig)
        finally:
            otel_context.detach(token)

    def task_job(self, host: Host, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
        """``Core.run_task``: the TASK's CONSUMER span and metrics around the job (TASK = last arg)."""
        task: Signal = args[-1]
        neuron = getattr(args[0], "neuron_id", None) or task.neuron
        parent = otel_context.get_current() if self.tracing else None
        tracer, tracing = self.tracer, self.tracing

        async def run_task() -> None:
            run = _TaskRun(task)
            run_token = _TASK.set(run)
            scope = None
            if tracing:
                subject = signal_subject(host.namespace, task)
                attrs = _signal_attributes(task, subject, self.system(host.synapse), "process", "process")
                attrs["messaging.client.id"] = host.dendrite_id
                if neuron:
                    attrs["cosmonapse.neuron"] = neuron
                caps = task.payload.get("capabilities")
                if caps and not task.neuron:
                    attrs["messaging.consumer.group.name"] = "caps:" + ",".join(sorted(map(str, caps)))
                span = tracer.start_span(
                    f"process {subject}", parent, kind=SpanKind.CONSUMER, attributes=attrs
                )
                scope = _Scope(span, parent, None).__enter__()
            started = time.perf_counter()
            failure: BaseException | None = None
            try:
                await fn(*args)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                _TASK.reset(run_token)
                outcome = run.outcome
                if outcome is None:
                    outcome = "stopped" if task.trace_id in host.tombstones else "no_reply"
                labels: dict[str, Any] = {"cosmonapse.outcome": outcome}
                if neuron:
                    labels["cosmonapse.neuron"] = neuron
                if run.code:
                    labels["error.type"] = run.code
                self.task_outcomes.add(1, labels)
                self.task_duration.record(time.perf_counter() - started, labels)
                if scope is not None:
                    scope.span.set_attribute("cosmonapse.outcome", outcome)
                    if run.code:
                        scope.span.set_attribute("error.type", run.code)
                        scope.span.set_status(Status(StatusCode.ERROR, run.code))
                    scope.__exit__(None, failure, None)

        return run_task

    def handler_job(
        self, host: Host, call: Callable[..., Awaitable[None]], fn: Any, args: tuple[Any, ...]
    ) -> Any:
        """``Core.run_job``: a job a Signal started runs in its context, in a CONSUMER span of its own."""
        if not self.tracing:
            return functools.partial(call, fn, args)
        parent = otel_context.get_current()
        sig = args[0] if args and isinstance(args[0], Signal) else None
        tracer = self.tracer

        async def run_job() -> None:
            if sig is None:
                token = otel_context.attach(parent)
                try:
                    await call(fn, args)
                finally:
                    otel_context.detach(token)
                return
            subject = signal_subject(host.namespace, sig)
            attrs = _signal_attributes(sig, subject, self.system(host.synapse), "process", "process")
            attrs["messaging.client.id"] = host.dendrite_id
            name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
            attrs["code.function.name"] = name
            span = tracer.start_span(f"process {subject}", parent, kind=SpanKind.CONSUMER, attributes=attrs)
            with _Scope(span, parent, None):
                await call(fn, args)

        return run_job

    def detached(self) -> Any:
        """A context with no span (a Dendrite's own tasks must not inherit the caller's span)."""
        return otel_context.attach(_EMPTY)

    def reattach(self, token: Any) -> None:
        otel_context.detach(token)

    def failed(self, exc: BaseException) -> None:
        """A job failed inside the current span (the job logged it)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))

    # ------------------------------------------------------------------ service points
    def _span(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | None = None,
        links: list[Link] | None = None,
        on_end: Callable[[BaseException | None], None] | None = None,
    ) -> Any:
        if not self.tracing:
            return _Timed(on_end) if on_end is not None else None
        span = self.tracer.start_span(name, parent, kind=kind, attributes=attributes, links=links)
        return _Scope(span, parent, on_end)

    def dispatching(self, neuron: str | None, capabilities: list[str] | None, meta: Any) -> Any:
        target = neuron or ("caps:" + ",".join(sorted(capabilities)) if capabilities else "open call")
        attrs: dict[str, Any] = {"cosmonapse.target": target}
        if neuron:
            attrs["cosmonapse.neuron"] = neuron
        if capabilities:
            attrs["cosmonapse.capabilities"] = sorted(capabilities)
        attempt = meta.get("attempt") if isinstance(meta, Mapping) else None
        if isinstance(attempt, int):
            attrs["cosmonapse.attempt"] = attempt
        return _Dispatch(self._span(f"dispatch {target}", attrs, kind=SpanKind.CLIENT), target, self)

    def retrying(self, neuron: str | None, capabilities: list[str] | None, max_attempts: int) -> Any:
        target = neuron or ("caps:" + ",".join(sorted(capabilities)) if capabilities else "open call")
        return self._span(
            f"run_with_retry {target}", {"cosmonapse.target": target, "cosmonapse.max_attempts": max_attempts}
        )

    def retried(self, attempt: int, outcome: object, trace_id: str) -> None:
        why = outcome.type.value if isinstance(outcome, Signal) else type(outcome).__name__
        self.retries.add(1, {"cosmonapse.retry.reason": why})
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "retry",
                {
                    "cosmonapse.attempt": attempt,
                    "cosmonapse.retry.reason": why,
                    "cosmonapse.trace_id": trace_id,
                },
            )

    def offering(self, offer: Signal, select: str, deadline_ms: int) -> Any:
        attrs = {
            "cosmonapse.trace_id": offer.trace_id,
            "cosmonapse.offer_id": offer.id,
            "cosmonapse.bidding.select": select,
            "cosmonapse.bidding.deadline_ms": deadline_ms,
        }
        return self._span("offer", attrs, kind=SpanKind.CLIENT)

    def answering(self, request: Signal, what: str) -> Any:
        """Continue *request*'s trace (however much later, wherever): parent = its context, link = ours."""
        parent = extract(request.meta)
        if not _is_valid(parent):
            parent = None
        current = trace.get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid and parent is not None else None
        attrs = {
            "cosmonapse.trace_id": request.trace_id,
            "cosmonapse.request_id": request.id,
            "cosmonapse.signal.type": request.type.value,
        }
        return self._span(f"{what} {request.type.value}", attrs, parent=parent, links=links)

    def awaiting(self, request: Signal) -> Any:
        attrs = {"cosmonapse.trace_id": request.trace_id, "cosmonapse.request_id": request.id}
        return self._span(f"await_decision {request.type.value}", attrs)

    def neuron_call(self, neuron_id: str, task: Signal) -> Any:
        attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": neuron_id,
            "cosmonapse.neuron": neuron_id,
            "cosmonapse.trace_id": task.trace_id,
            "cosmonapse.task_id": task.id,
        }
        return self._span(f"neuron {neuron_id}", attrs)

    def llm_call(self, source: str, operation: str, model: str | None, url: str, stream: bool) -> Any:
        provider = _PROVIDERS.get(source, source)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.system": provider,
            "gen_ai.provider.name": provider,
            "gen_ai.request.stream": stream,
        }
        if model:
            attrs["gen_ai.request.model"] = model
        try:
            import httpx

            u = httpx.URL(url)
            attrs["server.address"] = u.host
            if u.port:
                attrs["server.port"] = u.port
        except Exception:
            pass
        started = time.perf_counter()
        holder: dict[str, Any] = {}
        labels = {"gen_ai.operation.name": operation, "gen_ai.provider.name": provider}
        if model:
            labels["gen_ai.request.model"] = model

        def on_end(exc: BaseException | None) -> None:
            final = dict(labels)
            if exc is not None and not _cancelled(exc):
                final["error.type"] = type(exc).__qualname__
            self.genai_duration.record(time.perf_counter() - started, final)
            for kind in ("input", "output"):
                count = holder.get(kind)
                if isinstance(count, int):
                    self.genai_tokens.record(count, {**labels, "gen_ai.token.type": kind})

        scope = self._span(
            f"{operation} {model}" if model else operation, attrs, kind=SpanKind.CLIENT, on_end=on_end
        )
        return _LLMCall(scope, holder)

    def stop_sent(self, trace_id: str, rollback: bool) -> None:
        self.stops.add(1, {"cosmonapse.direction": "sent", "cosmonapse.rollback": rollback})

    def stop_settled(
        self, sig: Signal, cancelled: int, compensated: int, conflicts: int, rolled_back: bool
    ) -> None:
        self.stops.add(1, {"cosmonapse.direction": "received", "cosmonapse.rollback": rolled_back})
        if cancelled:
            self.cancelled.add(cancelled)
        if rolled_back:
            self.rollbacks.add(1)
            if compensated:
                self.compensated.add(compensated)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "cosmonapse.stop.cancelled": cancelled,
                    "cosmonapse.stop.compensated": compensated,
                    "cosmonapse.stop.conflicts": conflicts,
                    "cosmonapse.stop.rolled_back": rolled_back,
                    "cosmonapse.stop.reason": str(sig.payload.get("reason") or ""),
                }
            )

    def rollback(self, trace_id: str, undo: bool) -> Any:
        return self._span(
            "rollback" if undo else "commit", {"cosmonapse.trace_id": trace_id, "cosmonapse.rollback": undo}
        )

    def bus_event(self, kind: str, subject: str | None) -> None:
        counter = {"backpressure": self.backpressure, "dropped": self.dropped}.get(kind, self.slow_consumers)
        counter.add(1, {"messaging.destination.name": subject} if subject else {})

    def facade_call(self, method: str) -> Any:
        started = time.perf_counter()

        def on_end(exc: BaseException | None) -> None:
            labels = {
                "cosmonapse.method": method,
                "cosmonapse.outcome": "ok" if exc is None else type(exc).__name__,
            }
            self.facade_calls.add(1, labels)
            self.facade_duration.record(time.perf_counter() - started, labels)

        return _Timed(on_end)


class _Dispatch:
    """One dispatch → reply: its span (when tracing) and the latency histogram, by target and outcome."""

    __slots__ = ("_code", "_impl", "_outcome", "_scope", "_started", "_target")

    def __init__(self, scope: _Scope | None, target: str, impl: Instruments) -> None:
        self._scope, self._target, self._impl = scope, target, impl
        self._outcome: str | None = None
        self._code: str | None = None
        self._started = time.perf_counter()

    def __enter__(self) -> _Dispatch:
        if self._scope is not None:
            self._scope.__enter__()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if self._scope is not None:
                self._scope.__exit__(exc_type, exc, tb)
        finally:
            outcome = self._outcome or "reply"
            if exc is not None:
                outcome = _failure_name(exc)
            labels: dict[str, Any] = {"cosmonapse.target": self._target, "cosmonapse.outcome": outcome}
            if self._code and exc is None:
                labels["error.type"] = self._code
            self._impl.dispatch_duration.record(time.perf_counter() - self._started, labels)

    def reply(self, sig: Signal) -> Signal:
        self._outcome, self._code = sig.type.value, _error_code(sig)
        if self._scope is not None:
            self._scope.reply(sig)
        return sig

    def note(self, **attributes: Any) -> None:
        if self._scope is not None:
            self._scope.note(**attributes)

    def headers(self) -> dict[str, str] | None:
        return None


def _failure_name(exc: BaseException) -> str:
    if _cancelled(exc):
        return "cancelled"
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


class _LLMCall:
    """An LLM call's span: the answer's model, id, finish reasons, token usage and streamed chunks."""

    __slots__ = ("_holder", "_scope")

    def __init__(self, scope: Any, holder: dict[str, Any]) -> None:
        self._scope, self._holder = scope, holder

    def __enter__(self) -> _LLMCall:
        if self._scope is not None:
            self._scope.__enter__()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._scope is not None:
            self._scope.__exit__(exc_type, exc, tb)

    def reply(self, sig: Signal) -> Signal:
        return sig

    def headers(self) -> dict[str, str] | None:
        return self._scope.headers() if self._scope is not None else None

    def note(self, **attributes: Any) -> None:
        """``raw=`` the provider's answer, ``chunks=`` streamed pieces; other keys are span attributes."""
        raw = attributes.pop("raw", None)
        chunks = attributes.pop("chunks", None)
        found = usage(raw) if raw is not None else {}
        self._holder["input"] = found.pop("gen_ai.usage.input_tokens", None)
        self._holder["output"] = found.pop("gen_ai.usage.output_tokens", None)
        if self._holder["input"] is not None:
            found["gen_ai.usage.input_tokens"] = self._holder["input"]
        if self._holder["output"] is not None:
            found["gen_ai.usage.output_tokens"] = self._holder["output"]
        if chunks is not None:
            found["cosmonapse.gen_ai.streamed_chunks"] = chunks
        found.update(attributes)
        if self._scope is not None:
            self._scope.note(**found)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage(raw: Any) -> dict[str, Any]:
    """GenAI response attributes from a provider's answer: OpenAI, Anthropic, Ollama or TGI shapes."""
    out: dict[str, Any] = {}
    item = raw[0] if isinstance(raw, list) and raw else raw
    if not isinstance(item, dict):
        return out
    if isinstance(item.get("model"), str):
        out["gen_ai.response.model"] = item["model"]
    if isinstance(item.get("id"), str):
        out["gen_ai.response.id"] = item["id"]
    found = item.get("usage")
    used: dict[str, Any] = found if isinstance(found, dict) else {}
    inp = _int(used.get("prompt_tokens", used.get("input_tokens"))) or _int(item.get("prompt_eval_count"))
    outp = _int(used.get("completion_tokens", used.get("output_tokens"))) or _int(item.get("eval_count"))
    details = item.get("details")
    if outp is None and isinstance(details, dict):
        outp = _int(details.get("generated_tokens"))
    if inp is not None:
        out["gen_ai.usage.input_tokens"] = inp
    if outp is not None:
        out["gen_ai.usage.output_tokens"] = outp
    reasons = [c.get("finish_reason") for c in item.get("choices") or () if isinstance(c, dict)]
    reasons += [item.get(k) for k in ("stop_reason", "done_reason")]
    if isinstance(details, dict):
        reasons.append(details.get("finish_reason"))
    reasons = [str(r) for r in reasons if r]
    if reasons:
        out["gen_ai.response.finish_reasons"] = reasons
    return out
