"""The cognition emitters of a Dendrite: one method per Signal type, payloads as protocol §4.

Each builds its Signal with the envelope builder of its type (optional keys left
out when unset, TOOL_CALL/TOOL_RESULT with ``tool_name``), attributes it to
``neuron=`` or the Dendrite's own id, and goes through ``emit()`` — so the role
and type guards apply.
"""

from __future__ import annotations

from typing import Any

from .envelope import (
    consensus_signal,
    context_sync_signal,
    critique_signal,
    discover_signal,
    error_signal,
    escalation_signal,
    final_signal,
    memory_append_signal,
    plan_signal,
    thought_delta_signal,
    tool_call_signal,
    tool_result_signal,
)
from .signal import Directed, Signal

__all__ = ["CognitionEmitters"]


class CognitionEmitters:
    """``emit_final`` … ``emit_context_sync`` and ``discover``; the Dendrite supplies ``emit``."""

    dendrite_id: str

    async def emit(self, signal: Signal) -> None:  # pragma: no cover - provided by Dendrite
        raise NotImplementedError

    def _attributed(self, neuron: str | None) -> Directed:
        return Directed(neuron or self.dendrite_id)

    async def _emitted(self, sig: Signal) -> Signal:
        await self.emit(sig)
        return sig

    async def emit_final(
        self, *, trace_id: str, parent_id: str | None, result: Any, meta: dict[str, Any] | None = None,
        cost: Any = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            final_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), result=result,
                cost=cost, meta=meta,
            )
        )  # fmt: skip

    async def emit_error(
        self, *, trace_id: str, parent_id: str | None, code: str, message: str, recoverable: bool = False,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            error_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), code=code,
                message=message, recoverable=recoverable, meta=meta,
            )
        )  # fmt: skip

    async def emit_plan(
        self, *, trace_id: str, parent_id: str | None, steps: list[Any], rationale: str | None = None,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            plan_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), steps=steps,
                rationale=rationale, meta=meta,
            )
        )  # fmt: skip

    async def emit_thought_delta(
        self, *, trace_id: str, parent_id: str | None, delta: str, seq: int | None = None,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            thought_delta_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), delta=delta,
                seq=seq, meta=meta,
            )
        )  # fmt: skip

    async def emit_tool_call(
        self, *, trace_id: str, parent_id: str | None, tool: str, args: dict[str, Any],
        call_id: str | None = None, meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            tool_call_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), tool=tool,
                args=args, call_id=call_id, meta=meta,
            )
        )  # fmt: skip

    async def emit_tool_result(
        self, *, trace_id: str, parent_id: str | None, tool: str, result: Any = None,
        error: str | None = None, call_id: str | None = None, meta: dict[str, Any] | None = None,
        neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            tool_result_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), tool=tool,
                result=result, error=error, call_id=call_id, meta=meta,
            )
        )  # fmt: skip

    async def emit_memory_append(
        self, *, trace_id: str, parent_id: str | None, key: str, value: Any,
        meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            memory_append_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), key=key,
                value=value, meta=meta,
            )
        )  # fmt: skip

    async def emit_critique(
        self, *, trace_id: str, parent_id: str | None, target_event_id: str, issues: list[Any],
        verdict: str, meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            critique_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron),
                target_event_id=target_event_id, issues=issues, verdict=verdict, meta=meta,
            )
        )  # fmt: skip

    async def emit_escalation(
        self, *, trace_id: str, parent_id: str | None, reason: str, target: str | None = None,
        context: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
        neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            escalation_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), reason=reason,
                target=target, context=context, meta=meta,
            )
        )  # fmt: skip

    async def emit_consensus(
        self, *, trace_id: str, parent_id: str | None, members: list[str], verdict: str,
        votes: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
        neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            consensus_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), members=members,
                verdict=verdict, votes=votes, meta=meta,
            )
        )  # fmt: skip

    async def emit_context_sync(
        self, *, trace_id: str, parent_id: str | None, snapshot: dict[str, Any],
        version: str | None = None, meta: dict[str, Any] | None = None, neuron: str | None = None,
    ) -> Signal:  # fmt: skip
        return await self._emitted(
            context_sync_signal(
                trace_id=trace_id, parent_id=parent_id, directed=self._attributed(neuron), snapshot=snapshot,
                version=version, meta=meta,
            )
        )  # fmt: skip

    async def discover(self, *, neuron: str | None = None, capabilities: list[str] | None = None) -> Signal:
        """Broadcast DISCOVER; hosts answer with REGISTERs (watch them with ``on_register_signal``)."""
        return await self._emitted(
            discover_signal(neuron=neuron, capabilities=list(capabilities) if capabilities else None)
        )
