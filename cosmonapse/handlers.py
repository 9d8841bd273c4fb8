"""Inbound handler decorators: the registry behind every ``on_*``, its filters, and the service.

Every Signal type has a named decorator; each accepts the optional filters
``neuron=`` (``directed.id``), ``capability=`` and ``trace_id=``, and works
bare (``@d.on_final``) or called (``@d.on_final(neuron="x")``).  Decorators
return the function they were given, with its type.

``Handlers`` is the Dendrite's service behind them: it declares a route for
each type that has handlers (every type while ``on_trace`` handlers exist) and
hands each matching handler call to the core's job pool.

Order within a trace: a handler sees one trace's Signals one at a time, in the
order they reached this Dendrite.  Each (handler, trace) pair has a queue drained
by one job; different traces (and different handlers) run concurrently, so a
slow trace never holds up another.  A queue keeps at most ``HANDLER_BACKLOG``
Signals: beyond that the oldest one that is not a reply (AGENT_OUTPUT,
CLARIFICATION, PERMISSION, ERROR, FINAL) is dropped, counted in
``Handlers.dropped`` and logged — the same rule as a Pathway's buffer.
"""

from __future__ import annotations

import contextvars
import logging
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

import attrs

from .core import Core, Route, Service
from .runners import call_any, describe_fn, in_context
from .signal import PATHWAY_TYPES, WAIT_TYPES, Signal, SignalType
from .synapse.base import LogThrottle
from .telemetry import SWITCH as _TEL
from .telemetry import log_extra

__all__ = [
    "DECORATOR_TYPES",
    "DEPRECATED_ALIASES",
    "HANDLER_BACKLOG",
    "BoundDecorator",
    "HandlerDecorators",
    "HandlerFn",
    "HandlerRegistry",
    "HandlerSpec",
    "Handlers",
    "SignalDecorator",
]

log: logging.Logger = logging.getLogger("cosmonapse.handlers")

#: Signals one handler may have waiting on one trace before the oldest non-reply is dropped.
HANDLER_BACKLOG = 1024

#: A handler: called with each matching Signal; a coroutine function or a plain one.
HandlerFn = Callable[[Signal], Awaitable[Any] | Any]
F = TypeVar("F", bound=HandlerFn)

T = SignalType
#: Presence: what a roster is built from.
PRESENCE_TYPES = frozenset({T.REGISTER, T.DEREGISTER, T.HEARTBEAT})
#: The named decorators of seed 004 (plus on_audit / on_stop / on_stopped so every type has one).
DECORATOR_TYPES: dict[str, SignalType] = {
    "on_task_signal": T.TASK,
    "on_agent_output": T.AGENT_OUTPUT,
    "on_final": T.FINAL,
    "on_error_signal": T.ERROR,
    "on_task_offer": T.TASK_OFFER,
    "on_bid": T.BID,
    "on_task_awarded": T.TASK_AWARDED,
    "on_task_declined": T.TASK_DECLINED,
    "on_audit": T.AUDIT,
    "on_plan": T.PLAN,
    "on_thought_delta": T.THOUGHT_DELTA,
    "on_tool_call": T.TOOL_CALL,
    "on_tool_result": T.TOOL_RESULT,
    "on_memory_append": T.MEMORY_APPEND,
    "on_critique": T.CRITIQUE,
    "on_escalation": T.ESCALATION,
    "on_consensus": T.CONSENSUS,
    "on_context_sync": T.CONTEXT_SYNC,
    "on_clarification": T.CLARIFICATION,
    "on_permission": T.PERMISSION,
    "on_clarification_answer": T.CLARIFICATION_ANSWER,
    "on_permission_decision": T.PERMISSION_DECISION,
    "on_recall_signal": T.RECALL,
    "on_imprint_signal": T.IMPRINT,
    "on_recalled": T.RECALLED,
    "on_imprinted": T.IMPRINTED,
    "on_register_signal": T.REGISTER,
    "on_deregister_signal": T.DEREGISTER,
    "on_heartbeat_signal": T.HEARTBEAT,
    "on_discover": T.DISCOVER,
    "on_stop": T.STOP,
    "on_stopped": T.STOPPED,
}
#: Short names kept for reference users; they warn.
DEPRECATED_ALIASES: dict[str, str] = {
    "on_error": "on_error_signal",
    "on_register": "on_register_signal",
    "on_deregister": "on_deregister_signal",
    "on_heartbeat": "on_heartbeat_signal",
}


@attrs.frozen(eq=False)
class HandlerSpec:
    """One registered handler: which types, which filters, which function."""

    fn: HandlerFn
    types: frozenset[SignalType] | None = None  # None: every type (on_trace without types)
    neuron: str | None = None
    capability: str | None = None
    trace_id: str | None = None


class HandlerRegistry:
    """Handlers by type (and by trace for ``on_trace``); answers "who gets this Signal"."""

    __slots__ = ("_by_trace", "_by_type")

    def __init__(self) -> None:
        self._by_type: dict[SignalType, list[HandlerSpec]] = {}
        self._by_trace: dict[str, list[HandlerSpec]] = {}

    def add(self, spec: HandlerSpec) -> None:
        if spec.types is None:
            if spec.trace_id is None:
                raise ValueError("a handler for every type needs a trace_id")
            self._by_trace.setdefault(spec.trace_id, []).append(spec)
        else:
            for t in spec.types:
                self._by_type.setdefault(t, []).append(spec)

    def types(self) -> set[SignalType]:
        return set(self._by_type)

    def has(self, signal_type: SignalType) -> bool:
        return signal_type in self._by_type

    def uses_capability_filter(self) -> bool:
        return any(s.capability for specs in self._by_type.values() for s in specs)

    def has_trace_handlers(self) -> bool:
        return bool(self._by_trace)

    def wants_presence(self) -> bool:
        """Handlers that read who is there: presence types, or a ``capability=`` filter."""
        return any(t in self._by_type for t in PRESENCE_TYPES) or self.uses_capability_filter()

    def matching(self, sig: Signal, has_capability: Callable[[Signal, str], bool]) -> list[HandlerSpec]:
        specs = self._by_type.get(sig.type)
        by_trace = self._by_trace.get(sig.trace_id) if self._by_trace else None
        if not specs and not by_trace:
            return []
        out: list[HandlerSpec] = []
        for spec in specs or ():
            if spec.trace_id is not None and spec.trace_id != sig.trace_id:
                continue
            if spec.neuron is not None and (sig.directed is None or sig.directed.id != spec.neuron):
                continue
            if spec.capability is not None and not has_capability(sig, spec.capability):
                continue
            out.append(spec)
        for spec in by_trace or ():
            if spec.types is None:
                out.append(spec)
        return out


class BoundDecorator:
    """``owner.on_<type>``: register a handler for one Signal type, bare or with filters."""

    __slots__ = ("_deprecated", "_owner", "signal_type")

    def __init__(
        self, owner: HandlerDecorators, signal_type: SignalType, deprecated: tuple[str, str] | None
    ) -> None:
        self._owner = owner
        self.signal_type: SignalType = signal_type
        self._deprecated = deprecated  # (alias, the name to use instead)

    @overload
    def __call__(
        self, fn: F, *, neuron: str | None = None, capability: str | None = None, trace_id: str | None = None
    ) -> F: ...
    @overload
    def __call__(
        self,
        fn: None = None,
        *,
        neuron: str | None = None,
        capability: str | None = None,
        trace_id: str | None = None,
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        fn: HandlerFn | None = None,
        *,
        neuron: str | None = None,
        capability: str | None = None,
        trace_id: str | None = None,
    ) -> HandlerFn | Callable[[F], F]:
        if self._deprecated is not None:
            alias, target = self._deprecated
            warnings.warn(f"{alias} is deprecated; use {target}", DeprecationWarning, stacklevel=2)
        return self._owner.on_signal(
            self.signal_type, fn, neuron=neuron, capability=capability, trace_id=trace_id
        )


class SignalDecorator:
    """The class attribute behind each named decorator (``Dendrite.on_final``...)."""

    def __init__(self, signal_type: SignalType, *, alias_of: str | None = None) -> None:
        self.signal_type: SignalType = signal_type
        self.alias_of: str | None = alias_of
        self.name: str = ""
        if alias_of is None:
            self.__doc__ = (
                f"Register a handler for every {signal_type.value} (filters: neuron, capability, trace_id)."
            )
        else:
            self.__doc__ = f"Deprecated alias of {alias_of}."

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type[Any] | None = None) -> SignalDecorator: ...
    @overload
    def __get__(self, obj: HandlerDecorators, objtype: type[Any] | None = None) -> BoundDecorator: ...

    def __get__(
        self, obj: HandlerDecorators | None, objtype: type[Any] | None = None
    ) -> SignalDecorator | BoundDecorator:
        if obj is None:
            return self
        deprecated = (self.name, self.alias_of) if self.alias_of is not None else None
        return BoundDecorator(obj, self.signal_type, deprecated)


class HandlerDecorators:
    """The decorator surface of a Dendrite (and of the sync facade); the owner files the specs."""

    def _add_handler(self, spec: HandlerSpec) -> None:
        raise NotImplementedError  # pragma: no cover - each owner files handlers its own way

    @overload
    def on_signal(
        self,
        signal_type: SignalType,
        fn: F,
        *,
        neuron: str | None = None,
        capability: str | None = None,
        trace_id: str | None = None,
    ) -> F: ...
    @overload
    def on_signal(
        self,
        signal_type: SignalType,
        fn: None = None,
        *,
        neuron: str | None = None,
        capability: str | None = None,
        trace_id: str | None = None,
    ) -> Callable[[F], F]: ...

    def on_signal(
        self,
        signal_type: SignalType,
        fn: HandlerFn | None = None,
        *,
        neuron: str | None = None,
        capability: str | None = None,
        trace_id: str | None = None,
    ) -> Any:
        """Register a handler for *signal_type*, optionally filtered."""
        stype = SignalType(signal_type)

        def register(f: HandlerFn) -> HandlerFn:
            self._add_handler(
                HandlerSpec(f, frozenset({stype}), neuron=neuron, capability=capability, trace_id=trace_id)
            )
            return f

        return register(fn) if fn is not None else register

    def on_trace(self, trace_id: str, *types: SignalType) -> Callable[[F], F]:
        """Register a handler for every Signal (or the listed types) on one trace."""

        def register(f: F) -> F:
            wanted = frozenset(SignalType(t) for t in types) if types else None
            self._add_handler(HandlerSpec(f, wanted, trace_id=trace_id))
            return f

        return register

    # One named decorator per Signal type (DECORATOR_TYPES), then the deprecated aliases.
    on_task_signal: SignalDecorator = SignalDecorator(SignalType.TASK)
    on_agent_output: SignalDecorator = SignalDecorator(SignalType.AGENT_OUTPUT)
    on_final: SignalDecorator = SignalDecorator(SignalType.FINAL)
    on_error_signal: SignalDecorator = SignalDecorator(SignalType.ERROR)
    on_task_offer: SignalDecorator = SignalDecorator(SignalType.TASK_OFFER)
    on_bid: SignalDecorator = SignalDecorator(SignalType.BID)
    on_task_awarded: SignalDecorator = SignalDecorator(SignalType.TASK_AWARDED)
    on_task_declined: SignalDecorator = SignalDecorator(SignalType.TASK_DECLINED)
    on_audit: SignalDecorator = SignalDecorator(SignalType.AUDIT)
    on_plan: SignalDecorator = SignalDecorator(SignalType.PLAN)
    on_thought_delta: SignalDecorator = SignalDecorator(SignalType.THOUGHT_DELTA)
    on_tool_call: SignalDecorator = SignalDecorator(SignalType.TOOL_CALL)
    on_tool_result: SignalDecorator = SignalDecorator(SignalType.TOOL_RESULT)
    on_memory_append: SignalDecorator = SignalDecorator(SignalType.MEMORY_APPEND)
    on_critique: SignalDecorator = SignalDecorator(SignalType.CRITIQUE)
    on_escalation: SignalDecorator = SignalDecorator(SignalType.ESCALATION)
    on_consensus: SignalDecorator = SignalDecorator(SignalType.CONSENSUS)
    on_context_sync: SignalDecorator = SignalDecorator(SignalType.CONTEXT_SYNC)
    on_clarification: SignalDecorator = SignalDecorator(SignalType.CLARIFICATION)
    on_permission: SignalDecorator = SignalDecorator(SignalType.PERMISSION)
    on_clarification_answer: SignalDecorator = SignalDecorator(SignalType.CLARIFICATION_ANSWER)
    on_permission_decision: SignalDecorator = SignalDecorator(SignalType.PERMISSION_DECISION)
    on_recall_signal: SignalDecorator = SignalDecorator(SignalType.RECALL)
    on_imprint_signal: SignalDecorator = SignalDecorator(SignalType.IMPRINT)
    on_recalled: SignalDecorator = SignalDecorator(SignalType.RECALLED)
    on_imprinted: SignalDecorator = SignalDecorator(SignalType.IMPRINTED)
    on_register_signal: SignalDecorator = SignalDecorator(SignalType.REGISTER)
    on_deregister_signal: SignalDecorator = SignalDecorator(SignalType.DEREGISTER)
    on_heartbeat_signal: SignalDecorator = SignalDecorator(SignalType.HEARTBEAT)
    on_discover: SignalDecorator = SignalDecorator(SignalType.DISCOVER)
    on_stop: SignalDecorator = SignalDecorator(SignalType.STOP)
    on_stopped: SignalDecorator = SignalDecorator(SignalType.STOPPED)
    on_error: SignalDecorator = SignalDecorator(SignalType.ERROR, alias_of="on_error_signal")
    on_register: SignalDecorator = SignalDecorator(SignalType.REGISTER, alias_of="on_register_signal")
    on_deregister: SignalDecorator = SignalDecorator(SignalType.DEREGISTER, alias_of="on_deregister_signal")
    on_heartbeat: SignalDecorator = SignalDecorator(SignalType.HEARTBEAT, alias_of="on_heartbeat_signal")


class Handlers(Service):
    """The Dendrite's handlers: routes for the types they want, calls in the job pool, in trace order."""

    def __init__(
        self, core: Core, has_capability: Callable[[Signal, str], bool], backlog: int = HANDLER_BACKLOG
    ) -> None:
        self._core = core
        self._has_capability = has_capability
        self.registry: HandlerRegistry = HandlerRegistry()
        self.backlog: int = backlog
        #: Signals dropped because a handler was ``backlog`` Signals behind on their trace.
        self.dropped: int = 0
        self._drop_log = LogThrottle()
        # (handler, trace) -> Signals waiting for the job that is running that handler on that trace
        self._queues: dict[tuple[HandlerSpec, str], deque[Signal]] = {}

    def add(self, spec: HandlerSpec) -> None:
        """File *spec*; on a running Dendrite its subscriptions follow before the next publish."""
        self.registry.add(spec)
        self._core.routed_copies = self.registry.has(SignalType.TASK) or self.registry.has_trace_handlers()
        self._core.refresh()

    def has(self, signal_type: SignalType) -> bool:
        return self.registry.has(signal_type)

    def wants_presence(self) -> bool:
        return self.registry.wants_presence()

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        types = set(SignalType) if self.registry.has_trace_handlers() else self.registry.types()
        return [(t, self._dispatch) for t in types]

    def wanted(self) -> Iterable[SignalType]:
        wanted = set(self.registry.types())
        if self.registry.uses_capability_filter():
            wanted |= {SignalType.REGISTER, SignalType.DEREGISTER}  # to learn who has which capability
        if self.registry.has_trace_handlers():
            wanted |= PATHWAY_TYPES | {SignalType.TASK}  # on_trace sees every type, TASKs included
        return wanted

    async def _dispatch(self, sig: Signal) -> None:
        for spec in self.registry.matching(sig, self._has_capability):
            key = (spec, sig.trace_id)
            queue = self._queues.get(key)
            if queue is not None:  # a job is running this handler on this trace: after it
                if len(queue) >= self.backlog:
                    self._drop_one(queue, spec, sig)
                queue.append(sig)
                continue
            self._queues[key] = deque()
            try:
                await self._core.run_for(sig, self._drain, key, sig)  # STOP: never waits
            except BaseException:
                self._queues.pop(key, None)
                raise

    async def _drain(self, key: tuple[HandlerSpec, str], sig: Signal) -> None:
        """One job per (handler, trace): call it for *sig*, then for what queued meanwhile."""
        queue = self._queues.get(key)
        if queue is None:  # pragma: no cover - the Dendrite stopped and restarted in between
            return
        fn = key[0].fn
        run = self._core.run_handler
        base = contextvars.copy_context()  # each call starts from here, as if it were a job of its own
        first = True
        while True:
            if first:
                await run(self._call, fn, sig)
            else:
                await in_context(run(self._call, fn, sig), base.copy())
            if not queue:
                if self._queues.get(key) is queue:
                    del self._queues[key]
                return
            sig = queue.popleft()
            first = False

    async def _call(self, fn: HandlerFn, args: tuple[Signal]) -> None:
        """Call *fn* for one Signal; its failure is logged (with the Signal's ids) and the trace goes on."""
        sig = args[0]
        try:
            await call_any(fn, sig)
        except Exception as exc:  # logged with a rate limit per handler: a handler failing on every Signal
            self._core.failure_log(log).failed(
                f"{self._core.dendrite_id}: handler {describe_fn(fn)}",
                exc,
                detail=f" on {sig.type.value} {sig.id} (trace {sig.trace_id})",
                extra=log_extra(sig),
            )
            if (otel := _TEL.impl) is not None:
                otel.failed(exc)

    def _drop_one(self, queue: deque[Signal], spec: HandlerSpec, arriving: Signal) -> None:
        for i, old in enumerate(queue):
            if old.type not in WAIT_TYPES:
                del queue[i]
                break
        else:
            queue.popleft()
        self.dropped += 1
        since = self._drop_log.hit()
        if since is not None:
            log.warning(
                "%s: handler %s is %d Signals behind on trace %s: dropped the oldest "
                "(%d dropped since the last report, %d in all)",
                self._core.dendrite_id,
                getattr(spec.fn, "__qualname__", spec.fn),
                self.backlog,
                arriving.trace_id,
                since,
                self.dropped,
            )

    async def stopped(self, reason: str | None) -> None:
        self._queues.clear()  # their jobs were cancelled with the Dendrite
