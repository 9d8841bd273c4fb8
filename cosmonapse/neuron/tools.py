"""Provider tool calls: publish them on the trace and, if asked, run them (one round).

A model's structured tool calls (OpenAI ``tool_calls``, Anthropic
``tool_use``, Ollama ``message.tool_calls``) are normalised to
:class:`ToolCall`, published as TOOL_CALL, and — when the Neuron has an
executor for that name (``tools={"name": async fn}``) — run with the call's
arguments as keyword arguments, the outcome published as TOOL_RESULT.  The
output carries every call (with ``result``/``error`` when run) under
``tool_calls``; feeding results back to the model is the caller's next TASK.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs
import orjson

from ..context import current_task
from ..telemetry import log_extra
from .secrets import Secrets

__all__ = ["Emitter", "ToolCall", "parse_arguments", "run_tool_calls"]

log: logging.Logger = logging.getLogger("cosmonapse.neuron.tools")

ToolExecutor = Callable[..., Any]


@attrs.frozen
class ToolCall:
    """One call the model asked for."""

    tool: str
    args: dict[str, Any]
    call_id: str | None = None
    bad_arguments: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": self.tool, "args": self.args}
        if self.call_id is not None:
            out["call_id"] = self.call_id
        return out


def parse_arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """Arguments as a dict; a JSON string is decoded. Returns ``(args, problem)``."""
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, dict):
        return raw, None
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"_raw": raw}, "the model's tool arguments are not valid JSON"
        if isinstance(value, dict):
            return value, None
    return {"_raw": raw}, "the model's tool arguments are not a JSON object"


class Emitter:
    """Publishes cognition Signals through the Neuron's context when it can.

    A plain ``list`` context (or a NeuronContext not attached to a Dendrite)
    cannot emit; the Neuron then simply works without streaming Signals.
    With *secrets*, nothing it emits carries them: deltas go through a stream
    redactor (call ``finish()`` at the end of the text), tool calls and results
    are scrubbed.
    """

    def __init__(self, context: Any, secrets: Secrets | None = None) -> None:
        self._ctx = context if callable(getattr(context, "emit_thought_delta", None)) else None
        self._secrets = secrets if secrets is not None else Secrets()
        self._stream = self._secrets.stream()

    @property
    def enabled(self) -> bool:
        return self._ctx is not None

    async def _emit(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._ctx is None:
            return None
        try:
            return await getattr(self._ctx, name)(*args, **kwargs)
        except RuntimeError as exc:
            if "not attached" not in str(exc):
                raise
            self._ctx = None
            return None

    async def delta(self, text: str) -> None:
        safe = self._stream.feed(text)
        if safe:
            await self._emit("emit_thought_delta", safe)

    async def finish(self) -> None:
        """The text is complete: emit what the redactor held back."""
        rest = self._stream.flush()
        if rest:
            await self._emit("emit_thought_delta", rest)

    async def tool_call(self, call: ToolCall) -> None:
        args = self._secrets.scrub(call.args)
        await self._emit("emit_tool_call", call.tool, args, call_id=call.call_id)

    async def tool_result(self, call: ToolCall, *, result: Any = None, error: str | None = None) -> None:
        result, error = self._secrets.scrub(result), self._secrets.scrub(error)
        await self._emit("emit_tool_result", call.tool, result=result, error=error, call_id=call.call_id)


def _jsonable(value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return orjson.loads(orjson.dumps(value, default=str))


async def _execute(fn: ToolExecutor, args: dict[str, Any]) -> Any:
    result = fn(**args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def run_tool_calls(
    calls: list[ToolCall],
    emitter: Emitter,
    executors: Mapping[str, ToolExecutor] | None,
) -> list[dict[str, Any]]:
    """Publish each call, run those with an executor, and return them for the output."""
    out: list[dict[str, Any]] = []
    for call in calls:
        await emitter.tool_call(call)
        entry = call.as_dict()
        fn = (executors or {}).get(call.tool)
        if fn is not None:
            if call.bad_arguments:
                entry["error"] = call.bad_arguments
            else:
                try:
                    entry["result"] = _jsonable(await _execute(fn, call.args))
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as exc:
                    log.debug("tool %s raised", call.tool, exc_info=True, extra=log_extra(current_task.get()))
                    entry["error"] = f"{type(exc).__name__}: {exc}"
            await emitter.tool_result(call, result=entry.get("result"), error=entry.get("error"))
        out.append(entry)
    return out
