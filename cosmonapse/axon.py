"""``Axon``: identity and capabilities around a Neuron, and the Neuron contract (§8).

A Neuron is ``async fn(input, context) -> output``; a plain function is run in
a worker thread.  The Axon turns what the Neuron returns into the reply
Signal(s) — it never touches the Synapse; its Dendrite publishes them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

from .context import NeuronContext
from .signal import Directed, Signal, SignalType

__all__ = ["Axon", "NeuronFn", "reply_signals"]

log = logging.getLogger("cosmonapse.axon")

#: ``fn(input, context) -> output``: the context is a ``NeuronContext`` (a ``SyncNeuronContext``
#: when a plain function runs under the sync facade), so it is typed loosely here.
NeuronFn = Callable[[dict[str, Any], Any], Any]
ContextFetcher = Callable[[str], Awaitable[list[Any]]]


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def _caps(value: Any) -> tuple[str, ...]:
    return tuple(sorted(set(value or ())))


@attrs.define(eq=False)
class Axon:
    """Wraps one Neuron: gives it an id on the bus and validates its replies."""

    neuron_id: str
    neuron_fn: NeuronFn
    capabilities: tuple[str, ...] = attrs.field(default=(), converter=_caps)
    catch_all: bool = False
    version: str | None = None
    neuron_kind: str = "neuron"
    context_fetcher: ContextFetcher | None = None
    _is_async: bool = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.neuron_id or not isinstance(self.neuron_id, str):
            raise ValueError("Axon needs a non-empty neuron_id")
        if not callable(self.neuron_fn):
            raise TypeError(f"neuron_fn of {self.neuron_id!r} is not callable")
        self._is_async = _is_async_callable(self.neuron_fn)

    def serves(self, capabilities: list[str] | tuple[str, ...]) -> bool:
        """True when this Axon has every requested capability."""
        return set(capabilities) <= set(self.capabilities)

    def register_signal(self) -> Signal:
        """The REGISTER announcing this Axon (§7.2)."""
        payload: dict[str, Any] = {"role": "neuron", "capabilities": list(self.capabilities)}
        if self.version:
            payload["version"] = self.version
        meta = {"catch_all": True} if self.catch_all else {}
        return Signal(
            type=SignalType.REGISTER,
            directed=Directed(self.neuron_id, self.neuron_kind, self.capabilities),
            payload=payload,
            meta=meta,
        )

    async def fetch_context(self, task: Signal) -> list[Any]:
        ref = task.payload.get("context_ref")
        if not ref or self.context_fetcher is None:
            return []
        try:
            return list(await self.context_fetcher(ref))
        except Exception:
            log.exception("context fetch for %s failed; running with empty context", ref)
            return []

    async def call_neuron(self, input: dict[str, Any], context: NeuronContext) -> Any:
        """Run the Neuron: awaited if async, else in a worker thread."""
        if self._is_async:
            return await self.neuron_fn(input, context)
        result = await anyio.to_thread.run_sync(self.neuron_fn, input, context)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def serve_neuron(self, tg: Any) -> None:
        """Start the Neuron's long-lived service in *tg*, if it has one (``neuron_fn.serve``).

        An MCP Neuron keeps its session in such a task; hosting it in the Dendrite's
        task group gives every call one shared session, closed when the Dendrite stops.
        A Neuron the user already serves (``async with neuron:``) is left alone.
        """
        serve = getattr(self.neuron_fn, "serve", None)
        if serve is None or getattr(self.neuron_fn, "_serving", False):
            return
        try:
            await tg.start(serve)
        except RuntimeError:
            log.debug("neuron %s is already being served", self.neuron_id)

    async def aclose(self) -> None:
        """Release what the Neuron holds (its pooled HTTP client, say): ``neuron_fn.aclose()``.

        The hosting Dendrite calls this when it stops.
        """
        closer = getattr(self.neuron_fn, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                log.exception("closing neuron %s failed", self.neuron_id)

    async def run(self, task: Signal, context: NeuronContext) -> list[Signal]:
        """Run the Neuron on *task*; return the reply Signal(s) to publish.

        An exception becomes ERROR ``NEURON_EXCEPTION``; cancellation propagates
        (a cancelled Neuron publishes no reply).
        """
        input = task.payload.get("input")
        if not isinstance(input, dict):
            input = {}
        try:
            output = await self.call_neuron(input, context)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.debug("neuron %s raised", self.neuron_id, exc_info=True)
            return [
                _reply(
                    task,
                    self.neuron_id,
                    SignalType.ERROR,
                    {
                        "code": "NEURON_EXCEPTION",
                        "message": f"{type(exc).__name__}: {exc}",
                        "recoverable": False,
                    },
                )
            ]
        return reply_signals(task, self.neuron_id, output)


def _reply(task: Signal, neuron_id: str, stype: SignalType, payload: dict[str, Any]) -> Signal:
    return Signal(
        type=stype,
        trace_id=task.trace_id,
        parent_id=task.id,
        directed=Directed(id=neuron_id),
        payload=payload,
    )


def reply_signals(task: Signal, neuron_id: str, output: Any) -> list[Signal]:
    """Map a Neuron's output to its reply (§8 reply selection) plus a FINAL when finalizing."""
    if isinstance(output, dict):
        if output.get("__error__"):
            return [
                _reply(
                    task,
                    neuron_id,
                    SignalType.ERROR,
                    {
                        "code": str(output.get("code") or "NEURON_ERROR"),
                        "message": str(output.get("message") or ""),
                        "recoverable": bool(output.get("recoverable", False)),
                    },
                )
            ]
        if output.get("__clarification__"):
            payload: dict[str, Any] = {"question": str(output.get("question") or "")}
            if output.get("context"):
                payload["context"] = output["context"]
            return [_reply(task, neuron_id, SignalType.CLARIFICATION, payload)]
        if output.get("__permission__"):
            payload = {"action": str(output.get("action") or "")}
            if output.get("scope"):
                payload["scope"] = output["scope"]
            if output.get("reason") is not None:
                payload["reason"] = output["reason"]
            if output.get("context"):
                payload["context"] = output["context"]
            return [_reply(task, neuron_id, SignalType.PERMISSION, payload)]
        result = output
    else:
        result = {"value": output}
    reply = _reply(task, neuron_id, SignalType.AGENT_OUTPUT, {"output": result})
    if task.payload.get("finalize") is True:
        final = Signal(
            type=SignalType.FINAL,
            trace_id=task.trace_id,
            parent_id=reply.id,
            directed=Directed(id=neuron_id),
            payload={"result": result},
        )
        return [reply, final]
    return [reply]
