"""``NeuronContext``: what a Neuron gets as its second argument.

It is a ``list`` (the entries the Axon's context fetcher returned for the
TASK's ``context_ref``, empty by default — what reference Neurons expect) that
also carries the trace and task ids and can emit cognition Signals on the
Neuron's own trace.  Emitting goes through the hosting Dendrite; the Neuron
never touches the Synapse.

``current_task`` is the TASK the current task is running: a dispatch, recall or
imprint made from inside a Neuron takes its trace and parent from it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .engram.model import ImprintReceipt, RecallResult
from .envelope import (
    plan_signal,
    thought_delta_signal,
    tool_call_signal,
    tool_result_signal,
)
from .signal import Signal, SignalType, directed_to

__all__ = ["NeuronContext", "Publish", "current_task"]

#: How the context publishes (its host's: it may drop what a cancelled or STOPped TASK emits).
Publish = Callable[[Signal], Awaitable[object]]

#: The TASK being run by the current task (the ambient parent of dispatches made from a Neuron).
current_task: contextvars.ContextVar[Signal | None] = contextvars.ContextVar(
    "cosmonapse_current_task", default=None
)


class NeuronContext(list[Any]):
    """Context entries plus the running TASK's identity and emitters."""

    __slots__ = ("_dendrite", "_publish", "_seq", "dendrite_id", "neuron_id", "task")

    def __init__(
        self,
        task: Signal,
        neuron_id: str,
        publish: Publish | None = None,
        entries: Iterable[Any] = (),
        dendrite_id: str | None = None,
        dendrite: Any = None,
    ) -> None:
        super().__init__(entries)
        self._dendrite = dendrite  # the hosting Dendrite: recall/imprint go through it
        self.task: Signal = task
        self.neuron_id: str = neuron_id
        self.dendrite_id: str | None = dendrite_id
        self._publish = publish
        self._seq = 0

    @property
    def trace_id(self) -> str:
        return self.task.trace_id

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def input(self) -> dict[str, Any]:
        return self.task.payload.get("input") or {}

    async def emit(self, signal_type: SignalType, payload: dict[str, Any], **meta: Any) -> Signal:
        """Publish a Signal of *signal_type* on this trace, parent = the TASK, from this neuron."""
        return await self._sent(
            Signal(
                type=signal_type,
                trace_id=self.task.trace_id,
                parent_id=self.task.id,
                directed=directed_to(self.neuron_id),
                payload=payload,
                meta=dict(meta),
            )
        )

    async def _sent(self, sig: Signal) -> Signal:
        if self._publish is None:
            raise RuntimeError("this NeuronContext is not attached to a Dendrite")
        await self._publish(sig)
        return sig

    def _here(self) -> dict[str, Any]:
        """This TASK's trace, the TASK as parent, this neuron as the source (the builders' keywords)."""
        return {"trace_id": self.task.trace_id, "parent_id": self.task.id, "neuron": self.neuron_id}

    async def emit_thought_delta(self, delta: str, *, seq: int | None = None) -> Signal:
        """Stream a piece of text (a token, a sentence) ahead of the reply."""
        if seq is None:
            seq = self._seq
        self._seq = seq + 1
        return await self._sent(thought_delta_signal(**self._here(), delta=delta, seq=seq))

    async def emit_plan(self, steps: list[Any], *, rationale: str | None = None) -> Signal:
        return await self._sent(plan_signal(**self._here(), steps=steps, rationale=rationale))

    async def emit_tool_call(self, tool: str, args: dict[str, Any], *, call_id: str | None = None) -> Signal:
        """TOOL_CALL ``{tool, tool_name, args, call_id?}``."""
        sig = tool_call_signal(**self._here(), tool=tool, args=args, call_id=call_id)
        return await self._sent(sig)

    async def emit_tool_result(
        self,
        tool: str,
        *,
        result: Any = None,
        error: str | None = None,
        call_id: str | None = None,
    ) -> Signal:
        """TOOL_RESULT ``{tool, tool_name, result?, error?, call_id?}``."""
        here = self._here()
        return await self._sent(
            tool_result_signal(**here, tool=tool, result=result, error=error, call_id=call_id)
        )

    # -- Engram (shared memory) --------------------------------------------------
    def _host(self, what: str) -> Any:
        if self._dendrite is None:
            raise RuntimeError(f"{what} needs a NeuronContext attached to a Dendrite")
        return self._dendrite

    async def recall(
        self, *, query: dict[str, Any], engram_id: str | None = None, engram_kind: str | None = None,
        **kw: Any,
    ) -> RecallResult:  # fmt: skip
        """Recall from an engram on this TASK's trace (see ``Dendrite.recall``)."""
        result: RecallResult = await self._host("recall()").recall(
            engram_id=engram_id, engram_kind=engram_kind, query=query, trace_id=self.trace_id,
            parent_id=self.task_id, **kw,
        )  # fmt: skip
        return result

    async def imprint(
        self, *, op: str, entry: dict[str, Any], engram_id: str | None = None, engram_kind: str | None = None,
        **kw: Any,
    ) -> ImprintReceipt | None:  # fmt: skip
        """Write to an engram, journaled under this TASK's trace (see ``Dendrite.imprint``)."""
        receipt: ImprintReceipt | None = await self._host("imprint()").imprint(
            engram_id=engram_id, engram_kind=engram_kind, op=op, entry=entry, trace_id=self.trace_id,
            parent_id=self.task_id, **kw,
        )  # fmt: skip
        return receipt
