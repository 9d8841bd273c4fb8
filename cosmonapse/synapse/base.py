"""The Synapse interface every bus implements, and the per-subscription pump they share.

Contract (all adapters):

* ``publish(subject, signal)`` hands the Signal to the bus.  It may wait when
  a buffer on the way is full or the bus is unreachable (bounded by the
  adapter's ``publish_timeout``); it never grows a buffer without bound.
  It is **cancellation-safe**: a publish cancelled while it waits (for outbox
  room, for a reconnect) has queued nothing, and a frame is only ever written
  whole, so the caller may bound a publish by its own deadline
  (``with anyio.move_on_after(...)``) and the synapse stays usable.  A publish
  cancelled at the very moment its frame was taken may still be delivered
  (at most once).
* ``subscribe(subject, handler, queue_group=)`` returns a Subscription.  Each
  subscription has its own buffer drained by one pump task that awaits
  ``handler(signal)`` for each Signal in order.  A handler is expected to be
  quick (the Dendrite's router only files the Signal and starts work
  elsewhere); an exception from it is logged and the pump goes on.  A plain
  (sync) handler is run in a worker thread, one Signal at a time, so it can
  neither block the event loop nor be awaited by mistake.
* Buffers and their overflow policies: on the in-process bus a full
  subscription buffer (``subscription_buffer`` Signals) makes the publisher
  wait.  A network bus's reader never waits for one subscription — every other
  subscription of the connection, STOP included, would wait behind it: it files
  up to ``pending_limit`` Signals / ``pending_bytes`` bytes per subscription
  and drops (counted in ``dropped``, logged at WARNING at most every few
  seconds) beyond that, as NATS clients do with a slow consumer.
* Lifetimes: the synapse's tasks live in a task group hosted by a root task of
  its own (``TaskHost``), so ``connect()`` and ``close()`` may be called from any
  task, in any order across synapses, inside ``fail_after`` and cancel scopes;
  ``async with`` keeps its meaning.  All tasks are gone when ``close()`` returns.
  A failure in a background task is logged, and raised (``SynapseFailedError``)
  by the next call and by ``close()``.  Using a closed synapse raises
  ``SynapseClosedError``.
* Network adapters call the reconnect callbacks (sync, non-blocking) after
  they restored their subscriptions, so Dendrites can re-REGISTER.
"""

from __future__ import annotations

import abc
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
from anyio.abc import TaskGroup

from ..errors import SynapseClosedError, SynapseFailedError
from ..ids import new_ulid
from ..runners import is_async_callable
from ..signal import Signal
from ..taskhost import TaskHost, TaskHostFailed
from ..telemetry import bus_event, log_extra
from .buffer import SignalBuffer

__all__ = [
    "DEFAULT_PENDING_BYTES",
    "DEFAULT_PENDING_LIMIT",
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "AnyHandler",
    "Handler",
    "LogThrottle",
    "Subscription",
    "Synapse",
]

log: logging.Logger = logging.getLogger("cosmonapse.synapse")

Handler = Callable[[Signal], Awaitable[Any]]
#: What ``subscribe`` accepts: a coroutine function (awaited) or a plain one (run in a worker thread).
AnyHandler = Callable[[Signal], Any]

#: Signals a subscription buffers before in-process publishers wait for its pump.
DEFAULT_SUBSCRIPTION_BUFFER = 1024
#: Signals a network bus's reader files for one subscription before it drops (slow consumer).
DEFAULT_PENDING_LIMIT = 65536
#: Wire bytes a network bus's reader files for one subscription before it drops.
DEFAULT_PENDING_BYTES = 64 * 1024 * 1024
#: A slow consumer's drops are logged at most this often (seconds).
DROP_LOG_INTERVAL = 5.0
_UNDO_TIMEOUT = 1.0  # how long a failed subscribe() spends taking its subscription back
#: A pump hands this many queued Signals to its handler, then lets other tasks run.
_PUMP_BATCH = 64


class LogThrottle:
    """The first of a run of like events is logged, then at most one summary per ``interval``.

    ``hit()`` counts one event and returns how many happened since the last report when
    it is time to log (else None), so a flood of bad frames costs a few lines, not one each.
    """

    __slots__ = ("_next", "_reported", "count", "interval")

    def __init__(self, interval: float = DROP_LOG_INTERVAL) -> None:
        self.interval: float = interval
        self.count: int = 0
        self._reported = 0
        self._next = 0.0

    def hit(self) -> int | None:
        self.count += 1
        now = time.monotonic()
        if now < self._next:
            return None
        since, self._reported = self.count - self._reported, self.count
        self._next = now + self.interval
        return since


@attrs.define(eq=False)
class Subscription:
    """One subscription: pattern, optional queue group, handler and its bounded buffer."""

    subject: str
    handler: Handler
    queue_group: str | None = None
    sub_id: str = attrs.field(factory=lambda: new_ulid().lower())
    _buffer: SignalBuffer[Signal] | None = attrs.field(default=None, repr=False, alias="buffer")
    active: bool = True
    #: Every subject this subscription listens on (``subject`` is the first).  One
    #: subscription over several subjects has one buffer and one pump, so Signals
    #: published on different subjects reach the handler in the order they arrived.
    subjects: tuple[str, ...] = attrs.field(default=())
    #: Signals a network bus dropped because this subscription's pending limit was reached.
    dropped: int = 0
    _next_drop_log: float = attrs.field(default=0.0, repr=False, init=False)
    _logged_drops: int = attrs.field(default=0, repr=False, init=False)
    #: Who takes it back: the synapse, or the Dendrite that made it (set by them).
    _unsubscriber: Callable[[Subscription], Awaitable[None]] | None = attrs.field(
        default=None, repr=False, init=False
    )
    #: The subscriber's synchronous path (the Dendrite's ``Core.route_nowait``): the bus calls
    #: it instead of queueing when nothing is queued or being handled ahead of the Signal; it
    #: returns False, having done nothing, when the Signal must go through the pump after all
    #: (a route would have to wait).  One scheduling round less per Signal, same order.
    fast: Callable[[Signal], bool] | None = attrs.field(default=None, repr=False, init=False)
    #: The pump has taken a Signal and not finished handling it.
    _busy: bool = attrs.field(default=False, repr=False, init=False)

    def __attrs_post_init__(self) -> None:
        if not self.subjects:
            self.subjects = (self.subject,)

    async def unsubscribe(self) -> None:
        """Stop receiving: what ``synapse.unsubscribe(sub)`` (or ``dendrite.unsubscribe(sub)``) does."""
        if self._unsubscriber is not None:
            await self._unsubscriber(self)

    @property
    def pending(self) -> int:
        """Signals queued for the handler right now."""
        return 0 if self._buffer is None else len(self._buffer)

    def wire_ids(self) -> list[tuple[str, str]]:
        """(id, subject) per subject, for buses that need one subscription id each."""
        return [(self.sub_id if i == 0 else f"{self.sub_id}.{i}", s) for i, s in enumerate(self.subjects)]

    async def deliver(self, sig: Signal) -> None:
        """Queue *sig* for the pump; waits while the buffer is full (backpressure)."""
        buffer = self._buffer
        if buffer is None or not self.active:
            return
        if self.fast is not None and not buffer._items and not self._busy and self._take_now(sig):
            return
        if not buffer.put_nowait(sig):
            bus_event("backpressure", self.subject)  # the publisher waits for this pump
            await buffer.put(sig)

    def has_room(self) -> bool:
        """True when ``deliver_nowait`` would take a Signal now (a closed subscription takes anything)."""
        buffer = self._buffer
        return buffer is None or not self.active or buffer.closed or len(buffer) < buffer.max_items

    def deliver_nowait(self, sig: Signal) -> bool:
        """Queue *sig* if there is room; False when the buffer is full (the caller decides)."""
        buffer = self._buffer
        if buffer is None or not self.active:
            return True
        if self.fast is not None and not buffer._items and not self._busy and self._take_now(sig):
            return True
        return buffer.put_nowait(sig)

    def offer(self, sig: Signal, size: int) -> bool:
        """Queue *sig* (*size* wire bytes) without waiting, up to the pending limits; False beyond."""
        buffer = self._buffer
        if buffer is None or not self.active:
            return True
        if self.fast is not None and not buffer._items and not self._busy and self._take_now(sig):
            return True
        return buffer.offer(sig, size)

    def _take_now(self, sig: Signal) -> bool:
        """The subscriber's synchronous path; a failure is logged as the pump logs a handler's."""
        assert self.fast is not None
        try:
            return self.fast(sig)
        except Exception:
            log.exception(
                "handler for %s raised on %s %s", self.subject, sig.type.value, sig.id, extra=log_extra(sig)
            )
            return True

    def _close(self) -> None:
        self.active = False
        if self._buffer is not None:
            self._buffer.close()


class Synapse(abc.ABC):
    """A bus: publish Signals on subjects, subscribe handlers to patterns."""

    #: A network bus's reader files with ``offer`` (pending limits); the in-process bus
    #: puts with backpressure and needs neither the limits nor the byte accounting.
    _files_by_offer = True

    def __init__(
        self,
        *,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> None:
        if subscription_buffer < 1:
            raise ValueError("subscription_buffer must be >= 1")
        if pending_limit < 1 or pending_bytes < 1:
            raise ValueError("pending_limit and pending_bytes must be >= 1")
        self.subscription_buffer = subscription_buffer
        self.pending_limit = pending_limit
        self.pending_bytes = pending_bytes
        #: Signals dropped by this synapse's reader because a subscription was over its limits.
        self.dropped: int = 0
        self._bad_frames = LogThrottle()
        self._host: TaskHost | None = None
        self._tg: TaskGroup | None = None
        self._failure_reported = False
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._active_subs: set[Subscription] = set()

    # -- life cycle --------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``close()``, unless a background task failed."""
        host = self._host
        return host is not None and host.is_open

    async def connect(self) -> None:
        """Open the synapse's task group and whatever connection the bus needs.

        Callable from any task and inside any cancel scope: the synapse's tasks
        belong to it, not to the caller.  Idempotent while connected.
        """
        if self._host is not None:
            self._check_open("connect()")
            return
        host = TaskHost(self._name(), on_failure=self._on_host_failure)
        self._host = host
        self._failure_reported = False
        try:
            await host.open()
            self._tg = host.task_group
            await self._open(self._tg)
        except BaseException:
            self._host = None
            self._tg = None
            with anyio.CancelScope(shield=True):
                try:
                    await host.aclose()
                except TaskHostFailed:
                    log.debug("a background task failed while connect() failed", exc_info=True)
            raise

    async def close(self) -> None:
        """Stop every pump and connection task; idempotent, callable from any task.

        Raises ``SynapseFailedError`` if a background task failed and no call has
        reported it yet (the synapse is closed all the same).
        """
        host = self._host
        if host is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
        finally:
            # Subscriptions end with the connection: close their buffers, so a later
            # connect() starts clean (adapters forget them in _shutdown).
            for sub in self._active_subs:
                sub._close()
            self._active_subs.clear()
            self._host = None
            self._tg = None
            try:
                await host.aclose()
            except TaskHostFailed as exc:
                if not self._failure_reported:
                    self._failure_reported = True
                    raise SynapseFailedError(f"{self._name()}: {exc}") from exc.__cause__

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def bad_frames(self) -> int:
        """Frames the reader dropped because they were not Signals (or not the bus's protocol)."""
        return self._bad_frames.count

    def _bad_frame(self, what: str, subject: object, problem: object) -> None:
        """Drop a frame that is not a Signal: counted, logged at most every few seconds."""
        since = self._bad_frames.hit()
        if since is not None:
            log.warning(
                "%s: dropped %s on %s: %s (%d dropped since the last report, %d in all)",
                self._name(),
                what,
                subject,
                problem,
                since,
                self._bad_frames.count,
            )

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The active subscriptions (each has ``pending`` and ``dropped``, for monitoring)."""
        return tuple(self._active_subs)

    def _on_host_failure(self, failure: BaseException) -> None:
        self._tg = None  # the group is gone: the next call sees it and raises

    def _name(self) -> str:
        url = getattr(self, "url", None)
        return f"{type(self).__name__}({url})" if url else type(self).__name__

    def _check_open(self, what: str) -> TaskGroup:
        """The task group; ``SynapseClosedError`` when not connected, ``SynapseFailedError`` after a crash.

        Hot paths test ``self._tg is None`` first and call this only then.
        """
        host, tg = self._host, self._tg
        if host is not None and tg is not None:
            return tg
        failure = host.failure if host is not None else None
        if failure is not None:
            self._failure_reported = True
            raise SynapseFailedError(
                f"{self._name()} stopped working: a background task failed ({failure!r}); "
                f"{what} refused. close() it and connect again"
            ) from failure
        raise SynapseClosedError(f"{self._name()} is not connected; call connect() first ({what} refused)")

    # -- what adapters implement ------------------------------------------
    @abc.abstractmethod
    async def _open(self, tg: TaskGroup) -> None:
        """Connect; start reader tasks in *tg*."""

    async def _shutdown(self) -> None:
        """Flush and say goodbye before the task group is cancelled (shielded)."""

    @abc.abstractmethod
    async def publish(self, subject: str, signal: Signal) -> None:
        """Deliver *signal* on *subject*."""

    def publish_nowait(self, subject: str, signal: Signal) -> bool:
        """Deliver *signal* now if that needs no waiting; False, with nothing sent, otherwise.

        The fast path of a publish bounded by a deadline: the caller pays for a cancel
        scope only when the bus would make it wait.  Adapters that cannot tell return
        False (the default), and the caller falls back to ``publish``.
        """
        return False

    @abc.abstractmethod
    async def _on_subscribe(self, sub: Subscription) -> None:
        """Tell the bus about a new subscription."""

    @abc.abstractmethod
    async def _on_unsubscribe(self, sub: Subscription) -> None:
        """Tell the bus a subscription is gone."""

    # -- shared subscription machinery ------------------------------------
    def _require_tg(self) -> TaskGroup:
        return self._check_open("subscribe()")

    async def subscribe(
        self, subject: str | Sequence[str], handler: AnyHandler, *, queue_group: str | None = None
    ) -> Subscription:
        """Subscribe *handler* to *subject* (wildcards allowed); returns the Subscription.

        *subject* may be a list of subjects that do not overlap: they share one buffer
        and one pump, so the handler sees their Signals in arrival order.
        """
        tg = self._require_tg()
        subjects = (subject,) if isinstance(subject, str) else tuple(subject)
        if not subjects or not all(subjects):
            raise ValueError("subject must not be empty")
        if not callable(handler):
            raise TypeError(f"a subscription handler must be callable, not {type(handler).__name__}")
        pump_handler: Handler = handler if is_async_callable(handler) else _in_worker_thread(handler)
        buffer: SignalBuffer[Signal] = (
            SignalBuffer(
                self.subscription_buffer, max_pending=self.pending_limit, max_pending_bytes=self.pending_bytes
            )
            if self._files_by_offer
            else SignalBuffer(self.subscription_buffer)
        )
        sub = Subscription(
            subject=subjects[0],
            handler=pump_handler,
            queue_group=queue_group,
            buffer=buffer,
            subjects=subjects,
        )
        sub._unsubscriber = self.unsubscribe
        tg.start_soon(self._pump, sub, buffer, name=f"synapse-pump:{subjects[0]}")
        self._active_subs.add(sub)
        try:
            await self._on_subscribe(sub)
        except BaseException:
            # Cancelled or failed half-way (the bus may already have it): take it back.
            self._active_subs.discard(sub)
            sub._close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_UNDO_TIMEOUT):
                try:
                    await self._on_unsubscribe(sub)
                except Exception:
                    log.debug("undoing the subscription to %s failed", sub.subject, exc_info=True)
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """Remove *sub*; its pump finishes what it already buffered, then ends."""
        if not sub.active:
            return
        sub._close()
        self._active_subs.discard(sub)
        if self.connected:
            await self._on_unsubscribe(sub)

    def _dropped(self, sub: Subscription, sig: Signal) -> None:
        """A network reader could not file *sig* (``sub.offer`` refused): count it, say so now and then."""
        self.dropped += 1
        sub.dropped += 1
        bus_event("dropped", sub.subject)
        now = time.monotonic()
        if now >= sub._next_drop_log:
            log.warning(
                "%s: slow consumer: subscription to %s is over its pending limits (%d Signals / %d bytes); "
                "dropped %d Signal(s) since the last report (%d in all), the last a %s on trace %s",
                self._name(),
                sub.subject,
                self.pending_limit,
                self.pending_bytes,
                sub.dropped - sub._logged_drops,
                sub.dropped,
                sig.type.value,
                sig.trace_id,
                extra=log_extra(sig),
            )
            sub._logged_drops = sub.dropped
            sub._next_drop_log = now + DROP_LOG_INTERVAL

    @staticmethod
    async def _pump(sub: Subscription, buffer: SignalBuffer[Signal]) -> None:
        """Drain one subscription in order, until it is closed and empty.

        After ``_PUMP_BATCH`` Signals taken without waiting it yields once, so a pump
        with a long backlog and a handler that never waits cannot starve the others.
        """
        handler = sub.handler
        run = 0
        try:
            while True:
                sub._busy = False
                if buffer._items:  # queued: take it without a scheduling round (no call: hot path)
                    sig = buffer.get_nowait()
                    sub._busy = True  # from here until handled: nothing may overtake it
                    run += 1
                    if run >= _PUMP_BATCH:
                        run = 0
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                else:
                    run = 0
                    sig = await buffer.get()
                    sub._busy = True
                try:
                    # the synchronous path first (no coroutine per Signal): under a steady load the
                    # queue rarely empties, so most Signals come this way rather than straight
                    fast = sub.fast
                    if fast is None or not fast(sig):
                        await handler(sig)
                except Exception:
                    log.exception(
                        "handler for %s raised on %s %s", sub.subject, sig.type.value, sig.id,
                        extra=log_extra(sig),
                    )  # fmt: skip
        except anyio.EndOfStream:
            return
        finally:
            buffer.close()

    # -- reconnect notification -------------------------------------------
    def add_reconnect_callback(self, callback: Callable[[], None]) -> None:
        """Call *callback* (sync, must not block) after each successful reconnect."""
        self._reconnect_callbacks.append(callback)

    def remove_reconnect_callback(self, callback: Callable[[], None]) -> None:
        try:
            self._reconnect_callbacks.remove(callback)
        except ValueError:
            pass

    def _notify_reconnected(self) -> None:
        for cb in list(self._reconnect_callbacks):
            try:
                cb()
            except Exception:
                log.exception("reconnect callback raised")


def _in_worker_thread(fn: Callable[[Signal], Any]) -> Handler:
    """A plain handler, run in a worker thread (an awaitable it returns is awaited on the loop)."""

    async def handler(sig: Signal) -> None:
        result = await anyio.to_thread.run_sync(fn, sig)
        if inspect.isawaitable(result):
            await result

    handler.__qualname__ = f"in_thread({getattr(fn, '__qualname__', fn)!s})"
    return handler
