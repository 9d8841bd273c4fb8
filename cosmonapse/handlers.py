"""Inbound handler decorators: the registry behind every ``on_*`` and its filters.

Every Signal type has a named decorator; each accepts the optional filters
``neuron=`` (``directed.id``), ``capability=`` and ``trace_id=``, and works
bare (``@d.on_final``) or called (``@d.on_final(neuron="x")``).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

import attrs

from .signal import Signal, SignalType

__all__ = ["DECORATOR_TYPES", "DEPRECATED_ALIASES", "HandlerDecorators", "HandlerRegistry", "HandlerSpec"]

HandlerFn = Callable[[Signal], Awaitable[Any] | Any]
F = TypeVar("F", bound=HandlerFn)

T = SignalType
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

    def remove(self, spec: HandlerSpec) -> None:
        tables: Iterable[dict[Any, list[HandlerSpec]]] = (self._by_type, self._by_trace)
        for table in tables:
            for key in list(table):
                rest = [s for s in table[key] if s is not spec]
                if rest:
                    table[key] = rest
                else:
                    del table[key]

    def types(self) -> set[SignalType]:
        return set(self._by_type)

    def has(self, signal_type: SignalType) -> bool:
        return signal_type in self._by_type

    def uses_capability_filter(self) -> bool:
        return any(s.capability for specs in self._by_type.values() for s in specs)

    def has_trace_handlers(self) -> bool:
        return bool(self._by_trace)

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


def _named(signal_type: SignalType, name: str) -> Any:
    def decorator(
        self: HandlerDecorators,
        fn: HandlerFn | None = None,
        *,
        neuron: str | None = None,
        capability: str | None = None,
        trace_id: str | None = None,
    ) -> Any:
        return self.on_signal(signal_type, fn, neuron=neuron, capability=capability, trace_id=trace_id)

    decorator.__name__ = name
    decorator.__qualname__ = f"HandlerDecorators.{name}"
    decorator.__doc__ = (
        f"Register a handler for every {signal_type.value} (filters: neuron, capability, trace_id)."
    )
    return decorator


def _deprecated(alias: str, target: str) -> Any:
    def decorator(self: HandlerDecorators, fn: HandlerFn | None = None, **filters: Any) -> Any:
        warnings.warn(f"{alias} is deprecated; use {target}", DeprecationWarning, stacklevel=2)
        return getattr(self, target)(fn, **filters)

    decorator.__name__ = alias
    decorator.__doc__ = f"Deprecated alias of {target}."
    return decorator


class HandlerDecorators:
    """The decorator surface; the Dendrite supplies ``_add_handler``."""

    def _add_handler(self, spec: HandlerSpec) -> None:  # pragma: no cover - provided by Dendrite
        raise NotImplementedError

    @overload
    def on_signal(self, signal_type: SignalType, fn: F, **filters: Any) -> F: ...
    @overload
    def on_signal(self, signal_type: SignalType, fn: None = None, **filters: Any) -> Callable[[F], F]: ...

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

        def register(f: F) -> F:
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

    # The named decorators, one per type, are attached below.
    on_task_signal: Any
    on_agent_output: Any
    on_final: Any
    on_error_signal: Any
    on_task_offer: Any
    on_bid: Any
    on_task_awarded: Any
    on_task_declined: Any
    on_audit: Any
    on_plan: Any
    on_thought_delta: Any
    on_tool_call: Any
    on_tool_result: Any
    on_memory_append: Any
    on_critique: Any
    on_escalation: Any
    on_consensus: Any
    on_context_sync: Any
    on_clarification: Any
    on_permission: Any
    on_clarification_answer: Any
    on_permission_decision: Any
    on_recall_signal: Any
    on_imprint_signal: Any
    on_recalled: Any
    on_imprinted: Any
    on_register_signal: Any
    on_deregister_signal: Any
    on_heartbeat_signal: Any
    on_discover: Any
    on_stop: Any
    on_stopped: Any
    on_error: Any
    on_register: Any
    on_deregister: Any
    on_heartbeat: Any


for _name, _type in DECORATOR_TYPES.items():
    setattr(HandlerDecorators, _name, _named(_type, _name))
for _alias, _target in DEPRECATED_ALIASES.items():
    setattr(HandlerDecorators, _alias, _deprecated(_alias, _target))
