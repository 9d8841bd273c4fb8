"""The cognition emitters of a Dendrite: one method per Signal type, payloads as protocol §4.

Each builds its payload (optional keys left out when unset, as the reference
does), attributes the Signal to ``neuron=`` or the Dendrite's own id, and goes
through ``emit()`` — so the role and type guards apply.
"""

from __future__ import annotations

from typing import Any

from .signal import Directed, Signal, SignalType

__all__ = ["CognitionEmitters"]

T = SignalType


def _opt(payload: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        payload[key] = value


class CognitionEmitters:
    """``emit_final`` … ``emit_context_sync`` and ``discover``; the Dendrite supplies ``emit``."""

    dendrite_id: str

    async def emit(self, signal: Signal) -> None:  # pragma: no cover - provided by Dendrite
        raise NotImplementedError

    def _attributed(self, neuron: str | None) -> Directed:
        return Directed(neuron or self.dendrite_id)

    async def _emit_cognition(
        self,
        stype: SignalType,
        trace_id: str,
        parent_id: str | None,
        payload: dict[str, Any],
        meta: dict[str, Any] | None,
        neuron: str | None,
    ) -> Signal:
        sig = Signal(
            type=stype,
            trace_id=trace_id,
            parent_id=parent_id,
            directed=self._attributed(neuron),
            payload=payload,
            meta=dict(meta or {}),
        )
        await self.emit(sig)
        return sig

    async def emit_final(
        self, *, trace_id: str, parent_id: str | None, result: Any, meta: dict[str, Any] | None = None,
        cost: Any = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"result": result}
        if cost:
            payload["cost"] = cost
        return await self._emit_cognition(T.FINAL, trace_id, parent_id, payload, meta, neuron)

    async def emit_error(
        self, *, trace_id: str, parent_id: str | None, code: str, message: str, recoverable: bool = False,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload = {"code": code, "message": message, "recoverable": bool(recoverable)}
        return await self._emit_cognition(T.ERROR, trace_id, parent_id, payload, meta, neuron)

    async def emit_plan(
        self, *, trace_id: str, parent_id: str | None, steps: list[Any], rationale: str | None = None,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"steps": list(steps)}
        _opt(payload, "rationale", rationale)
        return await self._emit_cognition(T.PLAN, trace_id, parent_id, payload, meta, neuron)

    async def emit_thought_delta(
        self, *, trace_id: str, parent_id: str | None, delta: str, seq: int | None = None,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"delta": delta}
        _opt(payload, "seq", seq)
        return await self._emit_cognition(T.THOUGHT_DELTA, trace_id, parent_id, payload, meta, neuron)

    async def emit_tool_call(
        self, *, trace_id: str, parent_id: str | None, tool: str, args: dict[str, Any],
        call_id: str | None = None, meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"tool": tool, "args": args}
        _opt(payload, "call_id", call_id)
        return await self._emit_cognition(T.TOOL_CALL, trace_id, parent_id, payload, meta, neuron)

    async def emit_tool_result(
        self, *, trace_id: str, parent_id: str | None, tool: str, result: Any = None,
        error: str | None = None, call_id: str | None = None, meta: dict[str, Any] | None = None,
        neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"tool": tool}
        _opt(payload, "result", result)
        _opt(payload, "error", error)
        _opt(payload, "call_id", call_id)
        return await self._emit_cognition(T.TOOL_RESULT, trace_id, parent_id, payload, meta, neuron)

    async def emit_memory_append(
        self, *, trace_id: str, parent_id: str | None, key: str, value: Any,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload = {"key": key, "value": value}
        return await self._emit_cognition(T.MEMORY_APPEND, trace_id, parent_id, payload, meta, neuron)

    async def emit_critique(
        self, *, trace_id: str, parent_id: str | None, target_event_id: str, issues: list[Any],
        verdict: str, meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload = {"target_event_id": target_event_id, "issues": list(issues), "verdict": verdict}
        return await self._emit_cognition(T.CRITIQUE, trace_id, parent_id, payload, meta, neuron)

    async def emit_escalation(
        self, *, trace_id: str, parent_id: str | None, reason: str, target: str | None = None,
        context: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
        neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"reason": reason}
        _opt(payload, "target", target)
        _opt(payload, "context", context)
        return await self._emit_cognition(T.ESCALATION, trace_id, parent_id, payload, meta, neuron)

    async def emit_consensus(
        self, *, trace_id: str, parent_id: str | None, members: list[str], verdict: str,
        votes: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
        neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"members": list(members), "verdict": verdict}
        _opt(payload, "votes", votes)
        return await self._emit_cognition(T.CONSENSUS, trace_id, parent_id, payload, meta, neuron)

    async def emit_context_sync(
        self, *, trace_id: str, parent_id: str | None, snapshot: dict[str, Any],
        version: str | None = None, meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        payload: dict[str, Any] = {"snapshot": snapshot}
        _opt(payload, "version", version)
        return await self._emit_cognition(T.CONTEXT_SYNC, trace_id, parent_id, payload, meta, neuron)

    async def discover(self, *, neuron: str | None = None, capabilities: list[str] | None = None) -> Signal:
        """Broadcast DISCOVER; hosts answer with REGISTERs (watch them with ``on_register_signal``)."""
        payload: dict[str, Any] = {}
        _opt(payload, "neuron", neuron)
        if capabilities:
            payload["capabilities"] = list(capabilities)
        sig = Signal(type=T.DISCOVER, payload=payload)
        await self.emit(sig)
        return sig
