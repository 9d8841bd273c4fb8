"""Human in the loop (§11): clarification, permission and escalation, answered two ways.

* **Discrete answers** (any role): CLARIFICATION_ANSWER / PERMISSION_DECISION
  on the same trace with ``parent_id`` = the request; the asker reads them with
  ``await_decision(request)``.  The last 256 answers are cached by parent id,
  so an ``await_decision`` that starts after the answer arrived still resolves.
* **Re-dispatch** (orchestrators): a new TASK to the asking neuron, same trace,
  parent = the request, carrying the question and answer (or the verdict).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from .core import Core, Route, Service
from .errors import CosmonapseError, DendriteProtocolError
from .signal import Directed, Signal, SignalType
from .telemetry import answering, awaiting

__all__ = ["ANSWER_TYPES", "DecisionCache", "DecisionTimeout", "Decisions"]

T = SignalType
#: What answers each request type.
ANSWER_TYPES: dict[SignalType, SignalType] = {
    T.CLARIFICATION: T.CLARIFICATION_ANSWER,
    T.PERMISSION: T.PERMISSION_DECISION,
}
DECISION_CACHE_SIZE = 256


class DecisionTimeout(CosmonapseError, TimeoutError):
    """Nobody answered the clarification / permission request in time."""


class DecisionCache:
    """The last ``size`` answers, by the id of the request they answer."""

    __slots__ = ("_by_parent", "size")

    def __init__(self, size: int = DECISION_CACHE_SIZE) -> None:
        self.size: int = size
        self._by_parent: OrderedDict[str, Signal] = OrderedDict()

    def put(self, answer: Signal) -> None:
        if answer.parent_id is None or answer.parent_id in self._by_parent:
            return  # the first answer wins
        self._by_parent[answer.parent_id] = answer
        while len(self._by_parent) > self.size:
            self._by_parent.popitem(last=False)

    def get(self, request_id: str, types: frozenset[SignalType]) -> Signal | None:
        answer = self._by_parent.get(request_id)
        return answer if answer is not None and answer.type in types else None

    def __len__(self) -> int:
        return len(self._by_parent)


def _expect(request: Signal, stype: SignalType, what: str) -> None:
    if request.type is not stype:
        raise DendriteProtocolError(f"{what} answers a {stype.value}, not {request.type.value}")


Emit = Callable[[Signal], Awaitable[None]]
DispatchTask = Callable[..., Awaitable[Signal]]


class Decisions(Service):
    """``await_decision`` and the answer / respond helpers; remembers recent answers."""

    def __init__(self, core: Core, emit: Emit, dispatch_task: DispatchTask) -> None:
        self._core = core
        self._emit = emit  # the guarded public emit()
        self._dispatch_task = dispatch_task  # the guarded public dispatch_task()
        self.cache: DecisionCache = DecisionCache()

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return ((T.CLARIFICATION_ANSWER, self._remember), (T.PERMISSION_DECISION, self._remember))

    async def _remember(self, sig: Signal) -> None:
        self.cache.put(sig)  # so a late await_decision still resolves

    async def await_decision(self, request: Signal, *, timeout_s: float | None = 30.0) -> Signal:
        """The CLARIFICATION_ANSWER / PERMISSION_DECISION whose parent is *request*.

        Raises ``DecisionTimeout`` after *timeout_s*, ``OpCancelled`` if the trace
        ends or is STOPped first.
        """
        core = self._core
        answer_type = ANSWER_TYPES.get(request.type)
        if answer_type is None:
            raise DendriteProtocolError(
                f"await_decision() waits for the answer to a CLARIFICATION or PERMISSION, "
                f"not a {request.type.value} ({request.id}); nothing would ever answer it"
            )
        core.require_running("await_decision()")
        types = frozenset({answer_type})
        await core.want(*types)
        cached = self.cache.get(request.id, types)
        if cached is not None:
            return cached
        deadline = None if timeout_s is None else anyio.current_time() + timeout_s
        with awaiting(request) as span, core.ops.open(request.id, request.trace_id, types) as op:
            answer = await op.next(deadline)
            if answer is not None:
                span.reply(answer)
        if answer is None:
            raise DecisionTimeout(
                f"no answer to {request.type.value} {request.id} (trace {request.trace_id}) "
                f"within {timeout_s} s"
            )
        return answer

    def _answer(self, request: Signal, stype: SignalType, payload: dict[str, Any], meta: Any) -> Signal:
        return Signal(
            type=stype,
            trace_id=request.trace_id,
            parent_id=request.id,
            directed=Directed(self._core.dendrite_id),
            payload=payload,
            meta=dict(meta or {}),
        )

    async def answer_clarification(
        self, request: Signal, *, answer: Any, meta: dict[str, Any] | None = None
    ) -> Signal:
        """Publish CLARIFICATION_ANSWER for *request* (any role); returns it."""
        _expect(request, T.CLARIFICATION, "answer_clarification()")
        sig = self._answer(request, T.CLARIFICATION_ANSWER, {"answer": answer}, meta)
        with answering(request, "answer"):  # OpenTelemetry: continues the request's trace
            await self._emit(sig)
        return sig

    async def _decide(
        self,
        request: Signal,
        granted: bool,
        reason: str | None,
        ttl_ms: int | None,
        meta: dict[str, Any] | None,
    ) -> Signal:
        _expect(request, T.PERMISSION, "grant_permission()/deny_permission()")
        payload: dict[str, Any] = {"granted": granted}
        if reason is not None:
            payload["reason"] = reason
        if ttl_ms is not None:
            payload["ttl_ms"] = int(ttl_ms)
        sig = self._answer(request, T.PERMISSION_DECISION, payload, meta)
        with answering(request, "answer"):  # OpenTelemetry: continues the request's trace
            await self._emit(sig)
        return sig

    async def grant_permission(
        self,
        request: Signal,
        *,
        reason: str | None = None,
        ttl_ms: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Publish PERMISSION_DECISION ``granted: true`` for *request* (any role)."""
        return await self._decide(request, True, reason, ttl_ms, meta)

    async def deny_permission(
        self, request: Signal, *, reason: str | None = None, meta: dict[str, Any] | None = None
    ) -> Signal:
        """Publish PERMISSION_DECISION ``granted: false`` for *request* (any role)."""
        return await self._decide(request, False, reason, None, meta)

    async def _redispatch(
        self,
        request: Signal,
        neuron: str | None,
        input: dict[str, Any],
        meta: dict[str, Any] | None,
    ) -> Signal:
        target = neuron or request.neuron
        if not target:
            raise DendriteProtocolError(
                f"{request.type.value} {request.id} names no neuron to answer; pass neuron="
            )
        with answering(request, "respond"):  # OpenTelemetry: continues the request's trace
            return await self._dispatch_task(
                neuron=target, input=input, trace_id=request.trace_id, parent_id=request.id, meta=meta
            )

    async def respond_to_clarification(
        self,
        request: Signal,
        *,
        answer: Any,
        neuron: str | None = None,
        extra: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Re-dispatch the question and *answer* to the asking neuron (orchestrators); returns the TASK."""
        _expect(request, T.CLARIFICATION, "respond_to_clarification()")
        body = {"question": request.payload.get("question", ""), "answer": answer, **(extra or {})}
        return await self._redispatch(request, neuron, {"clarification": body}, meta)

    async def respond_to_permission(
        self,
        request: Signal,
        *,
        granted: bool,
        reason: str | None = None,
        ttl_ms: int | None = None,
        neuron: str | None = None,
        extra: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Re-dispatch to the asking neuron with the verdict (orchestrators); returns the TASK."""
        _expect(request, T.PERMISSION, "respond_to_permission()")
        body: dict[str, Any] = {"action": request.payload.get("action", ""), "granted": bool(granted)}
        if reason is not None:
            body["reason"] = reason
        if ttl_ms is not None:
            body["ttl_ms"] = int(ttl_ms)
        body.update(extra or {})
        return await self._redispatch(request, neuron, {"permission": body}, meta)

    async def respond_to_escalation(
        self,
        escalation: Signal,
        *,
        neuron: str | None = None,
        input: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Answer an ESCALATION with a TASK on its trace (orchestrators); returns the TASK.

        The TASK goes to *neuron*, else ``payload.target``, else back to the escalating
        neuron (seed 000: ``respond_to_escalation(sig, input={...})`` re-dispatches to it
        with the override).  Without *input* it carries ``{"escalation": {reason, context,
        from}}``.
        """
        _expect(escalation, T.ESCALATION, "respond_to_escalation()")
        target = neuron or escalation.payload.get("target") or escalation.neuron
        if not target:
            raise DendriteProtocolError(
                f"ESCALATION {escalation.id} names no target and no escalating neuron; pass neuron="
            )
        if input is None:
            input = {
                "escalation": {
                    "reason": escalation.payload.get("reason"),
                    "context": escalation.payload.get("context"),
                    "from": escalation.neuron,
                }
            }
        with answering(escalation, "respond"):  # OpenTelemetry: continues the escalation's trace
            return await self._dispatch_task(
                neuron=target, input=input, trace_id=escalation.trace_id, parent_id=escalation.id, meta=meta
            )
