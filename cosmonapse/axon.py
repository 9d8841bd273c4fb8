"""``Axon``: identity and capabilities around a Neuron, and the Neuron contract (§8).

A Neuron is ``async fn(input, context) -> output``; a plain function is run in
a worker thread.  The Axon turns what the Neuron returns into the reply
Signal(s) — it never touches the Synapse; its Dendrite publishes them.

Whatever the Neuron does, its host survives it:

* any exception — ``BaseException`` included (``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit``, custom subclasses) — other than the
  runtime's own cancellation becomes ERROR ``NEURON_EXCEPTION``, logged once at
  ERROR with its traceback and trace id;
* an output that is not plain JSON (a set, bytes, an object, NaN, infinity, a
  64-bit overflow, nesting too deep) becomes ERROR ``INVALID_OUTPUT`` naming
  where and what, on every bus alike;
* a Neuron cancelled (STOP, the Dendrite stopping) gets no reply, even if it
  swallowed the cancellation and returned; a sync Neuron stuck in its thread is
  abandoned at once (its late result is dropped, logged and counted in
  ``abandoned_calls`` / ``late_results``), so shutdown is not held by it;
* a Neuron that knows its secrets (``neuron_fn.scrub_secrets(value)``, as the
  built-in sources do) has them scrubbed from its replies, errors and logs.
"""

from __future__ import annotations

import inspect
import logging
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from .codec import json_problem
from .context import NeuronContext
from .runners import is_async_callable
from .signal import Directed, Signal, SignalType, directed_to, new_signal
from .telemetry import SWITCH as _TEL
from .telemetry import log_extra, neuron_call

__all__ = ["Axon", "ContextFetcher", "NeuronFn", "reply_signals"]

log: logging.Logger = logging.getLogger("cosmonapse.axon")

_counter_lock = threading.Lock()  # the Axon's counters are also bumped from Neuron threads

#: ``fn(input, context) -> output``: the context is a ``NeuronContext`` (a ``SyncNeuronContext``
#: when a plain function runs under the sync facade), so it is typed loosely here.
NeuronFn = Callable[[dict[str, Any], Any], Any]
ContextFetcher = Callable[[str], Awaitable[list[Any]]]


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
    _scrubber: Callable[[Any], Any] | None = attrs.field(init=False, repr=False, default=None)
    #: Sync Neuron calls left running in their thread when their TASK was cancelled.
    abandoned_calls: int = attrs.field(init=False, default=0)
    #: Of those, how many have since returned or raised (their result was dropped).
    late_results: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if not self.neuron_id or not isinstance(self.neuron_id, str):
            raise ValueError("Axon needs a non-empty neuron_id")
        if not callable(self.neuron_fn):
            raise TypeError(f"neuron_fn of {self.neuron_id!r} is not callable")
        self._is_async = is_async_callable(self.neuron_fn)
        self._scrubber = getattr(self.neuron_fn, "scrub_secrets", None)

    def scrub(self, value: Any) -> Any:
        """*value* with the Neuron's own secrets replaced (when the Neuron knows them)."""
        scrubber = self._scrubber
        return value if scrubber is None else scrubber(value)

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
            log.exception(
                "context fetch for %s failed; running with empty context", ref,
                extra=log_extra(task, neuron=self.neuron_id),
            )  # fmt: skip
            return []

    def call_neuron(self, input: dict[str, Any], context: NeuronContext) -> Awaitable[Any]:
        """Run the Neuron: an async one's own awaitable (no frame of ours around it: this runs
        for every TASK), else in a worker thread (abandoned if cancelled)."""
        if self._is_async:
            return self.neuron_fn(input, context)
        return self._call_plain(input, context)

    async def _call_plain(self, input: dict[str, Any], context: NeuronContext) -> Any:
        result = await self._call_in_thread(input, context)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _call_in_thread(self, input: dict[str, Any], context: NeuronContext) -> Any:
        """A thread cannot be interrupted: on cancellation we stop waiting for it at once.

        The thread runs on; when it ends, what it returned (or raised) is dropped,
        logged and counted.  It keeps one worker thread busy until then.
        """
        state = {"finished": False, "abandoned": False}
        lock = threading.Lock()
        task = context.task if isinstance(context, NeuronContext) else None
        trace = task.trace_id if task is not None else "?"

        def work() -> Any:
            outcome = "returned"
            try:
                return self.neuron_fn(input, context)
            except BaseException as exc:
                outcome = f"raised {type(exc).__name__}"
                raise
            finally:
                with lock:
                    state["finished"] = True
                    late = state["abandoned"]
                if late:
                    with _counter_lock:
                        self.late_results += 1
                    log.warning(
                        "sync neuron %s %s after its TASK (trace %s) was cancelled; result dropped",
                        self.neuron_id,
                        outcome,
                        trace,
                        extra=log_extra(task, neuron=self.neuron_id),
                    )

        try:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            with lock:
                abandoned = state["abandoned"] = not state["finished"]
            if abandoned:
                with _counter_lock:
                    self.abandoned_calls += 1
                log.warning(
                    "sync neuron %s was still running when its TASK (trace %s) was cancelled; "
                    "its thread is abandoned and its result will be dropped",
                    self.neuron_id,
                    trace,
                    extra=log_extra(task, neuron=self.neuron_id),
                )
            raise

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

    async def run(
        self, task: Signal, context: NeuronContext, *, check_cancelled: bool = True
    ) -> list[Signal]:
        """Run the Neuron on *task*; return the reply Signal(s) to publish.

        Any exception but the runtime's cancellation becomes ERROR
        ``NEURON_EXCEPTION``; an output that is not plain JSON becomes ERROR
        ``INVALID_OUTPUT``.  When the TASK was cancelled, cancellation propagates
        and there is no reply, whatever the Neuron returned.  A host that knows its
        TASK's cancel scope passes ``check_cancelled=False`` and checks that scope
        itself after a normal return (cheaper than asking the event loop).
        """
        input = task.payload.get("input")
        if not isinstance(input, dict):
            input = {}
        try:
            if _TEL.impl is None:
                output = await self.call_neuron(input, context)
            else:
                with neuron_call(self.neuron_id, task):  # OpenTelemetry: a span around the call
                    output = await self.call_neuron(input, context)
        except BaseException as exc:
            if _is_cancellation(exc):
                raise
            await anyio.lowlevel.checkpoint_if_cancelled()  # failed after its STOP: no reply
            message = self.scrub(f"{type(exc).__name__}: {exc}")
            self._log_failure(task, exc)
            return [_error(task, self.neuron_id, "NEURON_EXCEPTION", message)]
        if check_cancelled:
            await anyio.lowlevel.checkpoint_if_cancelled()  # returned after its STOP: no reply
        if self._scrubber is not None:
            output = self._scrubber(output)
        problem = json_problem(output)
        if problem is not None:
            message = f"neuron {self.neuron_id} returned an output that cannot go on the wire: {problem}"
            log.error(
                "%s (TASK %s, trace %s)", message, task.id, task.trace_id,
                extra=log_extra(task, neuron=self.neuron_id),
            )  # fmt: skip
            return [_error(task, self.neuron_id, "INVALID_OUTPUT", message)]
        return reply_signals(task, self.neuron_id, output)

    def _log_failure(self, task: Signal, exc: BaseException) -> None:
        """Once, at ERROR, with the traceback and the trace id; secrets scrubbed."""
        text = "".join(traceback.format_exception(exc)).rstrip()
        log.error(
            "neuron %s raised on TASK %s (trace %s); answered ERROR NEURON_EXCEPTION\n%s",
            self.neuron_id,
            task.id,
            task.trace_id,
            self.scrub(text),
            extra=log_extra(task, neuron=self.neuron_id),
        )


def _is_cancellation(exc: BaseException) -> bool:
    """The runtime's own cancellation (alone, or inside an exception group)."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda e: isinstance(e, cancelled)) is not None
    return False


def _error(task: Signal, neuron_id: str, code: str, message: str) -> Signal:
    return _reply(task, neuron_id, SignalType.ERROR, {"code": code, "message": message, "recoverable": False})


def _reply(task: Signal, neuron_id: str, stype: SignalType, payload: dict[str, Any]) -> Signal:
    return new_signal(stype, task.trace_id, payload, task.id, directed_to(neuron_id))


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
            directed=directed_to(neuron_id),
            payload={"result": result},
        )
        return [reply, final]
    return [reply]
