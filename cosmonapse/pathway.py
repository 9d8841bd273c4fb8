"""``Pathway``: the per-trace handle a caller reads a workflow through (seed 002, §9).

Three ways to read it — ``await wait()``/``wait_for(T)``, ``@pw.on(T)``
callbacks, ``async for sig in pw`` — over one bounded buffer:

* The buffer is a queue: each buffered Signal is handed to one reader (a
  ``wait``/``wait_for`` takes the first match out; iteration takes from the
  front).  ``on()`` callbacks see every Signal, whatever the scope.
* ``scope="terminal"`` buffers only FINAL/ERROR/CLARIFICATION/PERMISSION.
* ``on()`` callbacks for a Signal run before any reader can take it (and before
  a FINAL/ERROR closes the Pathway): ``await pw.wait()`` returns a reply whose
  callbacks have finished.  Callbacks run one Signal at a time, in arrival
  order, in the Dendrite's handler pool; Signals that arrive meanwhile wait
  behind them, so readers still see the trace in order.  (A callback must not
  wait on its own Pathway: the Signal it would wait for is held until it ends.)
* FINAL or ERROR closes the Pathway after it is buffered; buffered Signals are
  still served after close, then readers get ``PathwayClosedError``
  (iteration simply ends).
* Overflow: when ``max_buffer`` Signals are waiting unread, the oldest one
  that is not in the wait set (a THOUGHT_DELTA nobody reads, say) is dropped
  and counted in ``dropped``; wait-set Signals are never dropped.  So a
  chatty Neuron cannot grow memory without bound, and it can never make a
  caller miss its reply.
"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import anyio
import anyio.lowlevel

from .deadlines import Deadlines, Timer
from .errors import PathwayClosedError, PathwayTimeout
from .prims import Waitable
from .runners import FailureLog, call_any, describe_fn, in_context
from .signal import TERMINAL_SCOPE_TYPES, TERMINAL_TYPES, WAIT_TYPES, Signal, SignalType
from .telemetry import log_extra

__all__ = ["DEFAULT_PATHWAY_BUFFER", "Callback", "Pathway", "PathwayHost", "PathwayRole", "PathwayScope"]

log: logging.Logger = logging.getLogger("cosmonapse.pathway")

PathwayRole = Literal["originator", "observer"]
PathwayScope = Literal["all", "terminal"]
Callback = Callable[[Signal], Awaitable[Any] | Any]
C = TypeVar("C", bound=Callback)

#: Unread Signals a Pathway keeps before it drops the oldest non-wait-set one.
DEFAULT_PATHWAY_BUFFER = 256


class PathwayHost(Protocol):
    """What a Pathway needs from the Dendrite that files Signals into it."""

    @property
    def deadlines(self) -> Deadlines | None:
        """The timer service for ``wait(timeout_s)``; None when not running (a cancel scope is used)."""
        ...

    async def run_callback(self, fn: Callback, sig: Signal) -> None:
        """Run an ``on()`` callback for *sig* off the delivery path (in the handler pool)."""
        ...

    def forget(self, pathway: Pathway) -> None:
        """The Pathway closed: drop it from the host's table."""
        ...

    def failure_log(self, logger: logging.Logger) -> FailureLog:
        """Where a failing callback is logged: rate-limited per callback (a stream must not flood the log)."""
        ...


class Pathway:
    """One trace, seen from one Dendrite.

    Dendrites open them (``dispatch``, ``observe_pathway``).  One built directly,
    ``Pathway(trace_id)``, has no Dendrite behind it: whatever is handed to it is
    buffered and its callbacks run inline — handy in tests.
    """

    __slots__ = (
        "_buf",
        "_callbacks",
        "_closed",
        "_held",
        "_host",
        "_max",
        "_waiters",
        "_why",
        "dropped",
        "role",
        "scope",
        "task",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        *,
        host: PathwayHost | None = None,
        role: PathwayRole = "originator",
        scope: PathwayScope = "all",
        max_buffer: int = DEFAULT_PATHWAY_BUFFER,
    ) -> None:
        if scope not in ("all", "terminal"):
            raise ValueError(f"scope must be 'all' or 'terminal', not {scope!r}")
        self._host = host
        self.trace_id: str = trace_id
        self.role: PathwayRole = role
        self.scope: PathwayScope = scope
        self._max = max_buffer
        self._buf: list[Signal] = []
        self._waiters: list[Waitable] | None = None
        self._callbacks: dict[SignalType, list[Callback]] | None = None
        # Signals whose callbacks (or an earlier Signal's) have not finished yet, in arrival order
        self._held: deque[Signal] | None = None
        self._closed = False
        self._why: str | None = None  # why it was closed, when not by FINAL/ERROR or close()
        self.dropped: int = 0
        #: The TASK this Pathway's originator dispatched (None for observers).
        self.task: Signal | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Pathway {self.trace_id} {self.role} scope={self.scope} {state} buffered={len(self._buf)}>"

    @property
    def parent_id(self) -> str | None:
        """The reference's per-request correlation key; ours are trace Pathways (requests use ops): None."""
        return None

    @property
    def closed(self) -> bool:
        """True once FINAL/ERROR arrived or ``close()`` was called (buffered Signals stay readable)."""
        return self._closed

    def _has_reader(self) -> bool:
        """True while a reader waits in ``wait``/``wait_for``/iteration (the host's eviction asks)."""
        return bool(self._waiters)

    # -- delivery (called by the Dendrite's router) ------------------------
    async def _deliver(self, sig: Signal) -> None:
        """File *sig* (router side): after its ``on()`` callbacks, buffer it and close on FINAL/ERROR."""
        if self._closed:
            return
        held = self._held
        if held is not None:  # callbacks of an earlier Signal still run: keep the order
            if len(held) >= self._max:
                self._make_room(held, "queue of Signals waiting for callbacks", first=1)  # [0] is running
            held.append(sig)
            return
        if self._callbacks is not None and sig.type in self._callbacks:
            self._held = deque((sig,))
            try:
                if self._host is None:
                    await self._run_held(sig)
                else:
                    await self._host.run_callback(self._run_held, sig)
            except BaseException:
                self._held = None
                raise
            return
        if self.scope == "all" or sig.type in TERMINAL_SCOPE_TYPES:  # _accept, inlined: the hot path
            self._buffer(sig)
        if sig.type in TERMINAL_TYPES:
            self._close_now()

    def _needs_callbacks(self, sig: Signal) -> bool:
        """True when filing *sig* runs ``on()`` callbacks or waits behind them (only ``_deliver`` may)."""
        return not self._closed and (
            self._held is not None or (self._callbacks is not None and sig.type in self._callbacks)
        )

    def _deliver_nowait(self, sig: Signal) -> None:
        """File *sig* at once: ``_deliver`` for a Signal that needs no callbacks."""
        if not self._closed:
            self._accept(sig)

    def _accept(self, sig: Signal) -> None:
        if self.scope == "all" or sig.type in TERMINAL_SCOPE_TYPES:
            self._buffer(sig)
        if sig.type in TERMINAL_TYPES:
            self._close_now()

    async def _run_held(self, first: Signal) -> None:
        """One job per Pathway at a time: run each held Signal's callbacks, then let readers have it."""
        held = self._held
        base = contextvars.copy_context()  # each callback starts from here, as a job of its own would
        while held:
            sig = held[0]
            for cb in (self._callbacks or {}).get(sig.type, ()):
                try:
                    await in_context(call_any(cb, sig), base.copy())
                except Exception as exc:
                    self._callback_failed(cb, sig, exc)
            held.popleft()
            if not self._closed:  # closed meanwhile (close(), STOP): callbacks still run, readers are gone
                self._accept(sig)
                if self._closed:  # that was the FINAL/ERROR: what came after it is not this trace's any more
                    held.clear()
        if self._held is held:
            self._held = None

    def _callback_failed(self, cb: Callback, sig: Signal, exc: Exception) -> None:
        if self._host is None:
            log.exception("Pathway %s: on(%s) callback %r raised", self.trace_id, sig.type.value, cb)
            return
        self._host.failure_log(log).failed(
            f"Pathway on({sig.type.value}) callback {describe_fn(cb)}",
            exc,
            detail=f" on {sig.id} (trace {self.trace_id})",
            extra=log_extra(sig),
        )

    def _buffer(self, sig: Signal) -> None:
        buf = self._buf
        if len(buf) >= self._max:
            self._make_room(buf, "buffer")
        buf.append(sig)
        self._wake()

    def _make_room(self, queue: list[Signal] | deque[Signal], what: str, first: int = 0) -> None:
        """Drop the oldest Signal of a full *queue* (from index *first*) that is not a reply.

        Replies are never dropped.
        """
        for i, old in enumerate(queue):
            if i >= first and old.type not in WAIT_TYPES:
                del queue[i]
                self.dropped += 1
                if self.dropped == 1:
                    log.warning(
                        "Pathway %s %s full (%d): dropping the oldest non-reply Signals",
                        self.trace_id,
                        what,
                        self._max,
                        extra=log_extra(old),
                    )
                return

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for ev in waiters:
                ev.set()

    def _close_now(self, why: str | None = None) -> None:
        """Close without awaiting: wake every reader and leave the host's table."""
        if self._closed:
            return
        self._closed = True
        self._why = why
        self._wake()
        if self._host is not None:
            self._host.forget(self)

    # -- reading -----------------------------------------------------------
    def _pop_first(self, wanted: frozenset[SignalType] | None) -> Signal | None:
        for i, sig in enumerate(self._buf):
            if wanted is None or sig.type in wanted:
                del self._buf[i]
                return sig
        return None

    async def _take(self, wanted: frozenset[SignalType] | None, timeout_s: float | None, what: str) -> Signal:
        """The first buffered Signal in *wanted* (None: any), waiting up to *timeout_s* for one.

        One coroutine frame on the hot path (``dispatch_and_wait`` awaits it directly):
        the host's shared timer bounds the wait; without a host, a cancel scope does.
        """
        sig = self._pop_first(wanted)
        if sig is not None:
            await anyio.lowlevel.checkpoint()
            return sig
        deadlines = self._host.deadlines if self._host is not None else None
        timer: Timer | None = None
        new_event: Callable[[], Waitable] = anyio.Event
        if deadlines is not None:
            new_event = deadlines.new_event
            if timeout_s is not None:
                timer = deadlines.schedule(timeout_s)
        elif timeout_s is not None:
            return await self._take_in_scope(wanted, timeout_s, what)
        try:
            while True:
                if self._closed:
                    why = f" ({self._why})" if self._why else ""
                    raise PathwayClosedError(f"Pathway {self.trace_id} closed before {what} arrived{why}")
                ev = new_event()
                if timer is not None:
                    if timer.expired:
                        raise self._timeout(what, timeout_s)
                    timer.target = ev
                if self._waiters is None:
                    self._waiters = [ev]
                else:
                    self._waiters.append(ev)
                await ev.wait()
                sig = self._pop_first(wanted)
                if sig is not None:
                    return sig
        finally:
            if timer is not None:
                timer.cancel()

    async def _take_in_scope(
        self, wanted: frozenset[SignalType] | None, timeout_s: float, what: str
    ) -> Signal:
        """``_take`` bounded by a cancel scope: no host, so no shared timer."""
        try:
            with anyio.fail_after(timeout_s):
                return await self._take(wanted, None, what)
        except TimeoutError as exc:
            if isinstance(exc, PathwayTimeout):
                raise
            raise self._timeout(what, timeout_s) from None

    def _timeout(self, what: str, timeout_s: float | None) -> PathwayTimeout:
        return PathwayTimeout(f"no {what} on trace {self.trace_id} within {timeout_s} s")

    async def wait(self, timeout_s: float | None = None) -> Signal:
        """The next AGENT_OUTPUT / CLARIFICATION / PERMISSION / ERROR / FINAL."""
        return await self._take(WAIT_TYPES, timeout_s, "a reply")

    async def wait_for(self, signal_type: SignalType, timeout_s: float | None = None) -> Signal:
        """The next Signal of *signal_type*."""
        return await self._take(frozenset({SignalType(signal_type)}), timeout_s, signal_type.value)

    def on(self, signal_type: SignalType) -> Callable[[C], C]:
        """Decorator: call the function for every *signal_type* Signal on this trace."""

        def register(fn: C) -> C:
            if self._callbacks is None:
                self._callbacks = {}
            self._callbacks.setdefault(SignalType(signal_type), []).append(fn)
            return fn

        return register

    def __aiter__(self) -> Pathway:
        return self

    async def __anext__(self) -> Signal:
        try:
            return await self._take(None, None, "a Signal")
        except PathwayClosedError:
            raise StopAsyncIteration from None

    # -- life cycle --------------------------------------------------------
    async def close(self) -> None:
        """Stop receiving; idempotent.  Buffered Signals can still be read."""
        self._close_now()

    async def __aenter__(self) -> Pathway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_now()
