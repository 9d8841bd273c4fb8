"""OpenTelemetry for cosmonapse: spans, metrics, trace context on the wire and in logs, in one place.

Libraries instrument through the OpenTelemetry *API* and leave the *SDK* to the
application: when the app has configured a ``TracerProvider`` or a
``MeterProvider`` (in code, or with ``opentelemetry-instrument``), cosmonapse
emits spans and metrics with no further code; when it has not, or the API is
not installed, cosmonapse does nothing at all.

The fast path is a switch, not a no-op tracer.  ``SWITCH.on`` is False until a
real provider is found, and the core's four choke points (``Core.publish``,
``Core.route``, ``Core.run_task``, ``Core.run_job``) test that one attribute and
go on: no span objects, no context look-ups, no allocations per Signal.  The
switch is set by ``refresh()``, which a Dendrite calls when it starts (and the
sync facade on each call): it looks for ``opentelemetry`` in ``sys.modules``
first, so a process that never imported OpenTelemetry never imports it because
of us.  Providers are set once per process (the API refuses a second), so a
switch that is on stays on.  ``use()`` pins explicit providers instead of the
global ones (tests, or an app that keeps several).

Everything that touches the OpenTelemetry API lives in ``_otel`` (imported only
once a provider exists); this module also has what works without it: the
``extra`` of our log records (``log_extra``) and the trace context for message
headers (``trace_headers``).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..signal import Signal

if TYPE_CHECKING:
    from ._otel import Instruments

__all__ = [
    "NOOP",
    "SWITCH",
    "TRACE_KEYS",
    "Gauges",
    "Scope",
    "Switch",
    "answering",
    "awaiting",
    "bus_event",
    "dispatching",
    "facade_call",
    "llm_call",
    "log_extra",
    "neuron_call",
    "offering",
    "refresh",
    "retried",
    "retrying",
    "rollback",
    "stop_sent",
    "stop_settled",
    "trace_headers",
    "unwatch",
    "use",
    "watch",
]

#: The envelope ``meta`` keys that carry W3C trace context (what we copy into message headers).
TRACE_KEYS: tuple[str, ...] = ("traceparent", "tracestate")

#: A Dendrite's live figures for the observable gauges: (in-flight traces, running TASKs).
Gauges = Callable[[], tuple[int, int]]


class Switch:
    """Whether cosmonapse instruments, and with what.  Read ``on`` on hot paths; nothing else."""

    __slots__ = ("_pinned", "impl", "meter_provider", "on", "tracer_provider")

    def __init__(self) -> None:
        #: True when a real tracer or meter provider is configured.
        self.on: bool = False
        #: The instruments (spans, metrics) while ``on``.
        self.impl: Instruments | None = None
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self._pinned = False


SWITCH: Switch = Switch()
_GAUGES: weakref.WeakKeyDictionary[object, tuple[str, Gauges]] = weakref.WeakKeyDictionary()


def _configured(module: str, getter: str) -> Any:
    """The app's global provider from *module*, or None while it is the API's own default."""
    mod = sys.modules.get(module)
    if mod is None:
        return None  # nobody imported OpenTelemetry: nothing can be configured
    provider = getattr(mod, getter)()
    # The API's defaults (proxy and no-op providers) live in the API's own modules.
    return None if type(provider).__module__.startswith(module) else provider


def _install(tracer_provider: Any, meter_provider: Any) -> bool:
    s = SWITCH
    if s.impl is not None and tracer_provider is s.tracer_provider and meter_provider is s.meter_provider:
        return s.on
    s.tracer_provider, s.meter_provider = tracer_provider, meter_provider
    if tracer_provider is None and meter_provider is None:
        s.impl, s.on = None, False
        return False
    from ._otel import Instruments

    s.impl = Instruments(tracer_provider, meter_provider, _GAUGES)
    s.on = True
    return True


def refresh() -> bool:
    """Look for a configured SDK now; True when cosmonapse instruments.

    Called when a Dendrite starts and on each facade call; call it yourself if you
    configure OpenTelemetry after your Dendrites started.
    """
    if SWITCH._pinned:
        return SWITCH.on
    return _install(
        _configured("opentelemetry.trace", "get_tracer_provider"),
        _configured("opentelemetry.metrics", "get_meter_provider"),
    )


def use(*, tracer_provider: Any = None, meter_provider: Any = None) -> bool:
    """Instrument with these providers instead of the global ones; ``use()`` goes back to the globals.

    For tests and for apps that keep more than one provider.  Returns ``SWITCH.on``.
    """
    if tracer_provider is None and meter_provider is None:
        SWITCH._pinned = False
        SWITCH.impl = None
        return refresh()
    SWITCH._pinned = True
    return _install(tracer_provider, meter_provider)


def watch(owner: object, name: str, gauges: Gauges) -> None:
    """Report *owner*'s in-flight traces and running TASKs (read at collection time, never per Signal)."""
    _GAUGES[owner] = (name, gauges)


def unwatch(owner: object) -> None:
    _GAUGES.pop(owner, None)


def log_extra(
    sig: Signal | None = None,
    *,
    neuron: str | None = None,
    trace_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The ``extra=`` of a log record about a Signal or a TASK.

    ``trace_id``, ``event_id`` and ``neuron`` always (None when unknown), so a JSON or
    structlog formatter finds the same keys on every record; ``otel_trace_id`` and
    ``otel_span_id`` (hex) as well while an OpenTelemetry span is current.
    """
    if sig is not None:
        trace_id = trace_id or sig.trace_id
        event_id = event_id or sig.id
        neuron = neuron or sig.neuron
    extra: dict[str, Any] = {"trace_id": trace_id, "event_id": event_id, "neuron": neuron}
    impl = SWITCH.impl
    if impl is not None:
        impl.add_span_ids(extra)
    return extra


def trace_headers(meta: Mapping[str, Any]) -> dict[str, str]:
    """The W3C trace context of an envelope's ``meta``, as message headers (``{}`` when it has none).

    For buses that carry headers (NATS ``HPUB``): the context travels in ``meta``
    in any case; headers let brokers and tools that read only headers see it too.
    """
    return {k: v for k in TRACE_KEYS if isinstance(v := meta.get(k), str) and v}


class Scope(Protocol):
    """What the span helpers return: a ``with`` block, and what to tell it from inside."""

    def __enter__(self) -> Scope: ...

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None: ...

    def reply(self, sig: Signal) -> Signal:
        """The reply that ended the work (its type is the outcome); returns it."""
        ...

    def note(self, **attributes: Any) -> None:
        """Attributes learnt inside the block (an LLM call also takes ``raw=`` and ``chunks=``)."""
        ...

    def headers(self) -> dict[str, str] | None:
        """HTTP headers carrying the current trace context (None when off)."""
        ...


class _Noop:
    """What the span helpers return while the switch is off: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        return None

    def reply(self, sig: Signal) -> Signal:
        return sig

    def note(self, **attributes: Any) -> None:
        return None

    def headers(self) -> dict[str, str] | None:
        return None


#: The shared do-nothing span helper.
NOOP: _Noop = _Noop()


# -- service points: each returns NOOP (or does nothing) while the switch is off ---------------------


def dispatching(neuron: str | None, capabilities: list[str] | None, meta: Any) -> Scope:
    """Around one dispatch → reply (``dendrite._traced_reply``): a CLIENT span and the latency histogram."""
    impl = SWITCH.impl
    return impl.dispatching(neuron, capabilities, meta) if impl is not None else NOOP


def retrying(neuron: str | None, capabilities: list[str] | None, max_attempts: int) -> Scope:
    """Around ``run_with_retry``: its attempts are children of this span, whatever trace each uses."""
    impl = SWITCH.impl
    return (impl.retrying(neuron, capabilities, max_attempts) or NOOP) if impl is not None else NOOP


def retried(attempt: int, outcome: object, trace_id: str) -> None:
    """Attempt *attempt* failed with *outcome* and will be tried again."""
    impl = SWITCH.impl
    if impl is not None:
        impl.retried(attempt, outcome, trace_id)


def offering(offer: Signal, select: str, deadline_ms: int) -> Scope:
    """Around bidding: the offer, the bids, the award."""
    impl = SWITCH.impl
    return (impl.offering(offer, select, deadline_ms) or NOOP) if impl is not None else NOOP


def answering(request: Signal, what: str) -> Scope:
    """Around answering a CLARIFICATION / PERMISSION / ESCALATION: continues the request's trace."""
    impl = SWITCH.impl
    return (impl.answering(request, what) or NOOP) if impl is not None else NOOP


def awaiting(request: Signal) -> Scope:
    """Around ``await_decision``: the pause for a human."""
    impl = SWITCH.impl
    return (impl.awaiting(request) or NOOP) if impl is not None else NOOP


def neuron_call(neuron_id: str, task: Signal) -> Scope:
    """Around one call of a Neuron."""
    impl = SWITCH.impl
    return (impl.neuron_call(neuron_id, task) or NOOP) if impl is not None else NOOP


def llm_call(source: str, operation: str, model: str | None, url: str, stream: bool) -> Scope:
    """Around one LLM HTTP exchange (GenAI conventions); ``note(raw=..., chunks=...)`` when answered."""
    impl = SWITCH.impl
    return impl.llm_call(source, operation, model, url, stream) if impl is not None else NOOP


def rollback(trace_id: str, undo: bool) -> Scope:
    """Around a STOP's settlement of the trace's Engram writes (rolled back when *undo*, else committed)."""
    impl = SWITCH.impl
    return (impl.rollback(trace_id, undo) or NOOP) if impl is not None else NOOP


def stop_sent(trace_id: str, rollback: bool) -> None:
    impl = SWITCH.impl
    if impl is not None:
        impl.stop_sent(trace_id, rollback)


def stop_settled(sig: Signal, cancelled: int, compensated: int, conflicts: int, rolled_back: bool) -> None:
    """A STOP was handled here: what it cancelled and compensated (on the current span, and counted)."""
    impl = SWITCH.impl
    if impl is not None:
        impl.stop_settled(sig, cancelled, compensated, conflicts, rolled_back)


def bus_event(kind: str, subject: str | None = None) -> None:
    """A bus had to push back: ``backpressure``, ``dropped`` or ``slow_consumer`` (a rare path)."""
    impl = SWITCH.impl
    if impl is not None:
        impl.bus_event(kind, subject)


def facade_call(method: str) -> Scope:
    """Around one blocking facade call (counted and timed); looks for a newly configured SDK first."""
    if not SWITCH.on:
        refresh()
    impl = SWITCH.impl
    return impl.facade_call(method) if impl is not None else NOOP
