"""The Synapse interface every bus implements, and the per-subscription pump they share.

Contract (all adapters):

* ``publish(subject, signal)`` hands the Signal to the bus.  It may wait when
  a buffer on the way is full (backpressure); it never grows a buffer without
  bound.
* ``subscribe(subject, handler, queue_group=)`` returns a Subscription.  Each
  subscription has its own bounded buffer drained by one pump task that lives in
  the synapse's task group and awaits ``handler(signal)`` for each Signal in
  order.  A handler is expected to be quick (the Dendrite's router only files
  the Signal and starts work elsewhere); an exception from it is logged and the
  pump goes on.
* The Synapse owns its tasks: they start in ``connect()`` (or ``__aenter__``)
  and are all gone when ``close()`` returns.  ``connect()`` and ``close()``
  must be called from the same task, as for any anyio context.
* Network adapters call the reconnect callbacks (sync, non-blocking) after
  they restored their subscriptions, so Dendrites can re-REGISTER.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
from anyio.abc import TaskGroup

from ..errors import SynapseClosedError
from ..ids import new_ulid
from ..signal import Signal
from .buffer import SignalBuffer

__all__ = ["DEFAULT_SUBSCRIPTION_BUFFER", "Handler", "Subscription", "Synapse"]

log = logging.getLogger("cosmonapse.synapse")

Handler = Callable[[Signal], Awaitable[Any]]

#: Signals a subscription buffers before publishers wait for its pump.
DEFAULT_SUBSCRIPTION_BUFFER = 1024


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

    def __attrs_post_init__(self) -> None:
        if not self.subjects:
            self.subjects = (self.subject,)

    def wire_ids(self) -> list[tuple[str, str]]:
        """(id, subject) per subject, for buses that need one subscription id each."""
        return [(self.sub_id if i == 0 else f"{self.sub_id}.{i}", s) for i, s in enumerate(self.subjects)]

    async def deliver(self, sig: Signal) -> None:
        """Queue *sig* for the pump; waits while the buffer is full (backpressure)."""
        buffer = self._buffer
        if buffer is not None and self.active and not buffer.put_nowait(sig):
            await buffer.put(sig)

    def deliver_nowait(self, sig: Signal) -> bool:
        """Queue *sig* if there is room; False when the buffer is full (the caller decides)."""
        buffer = self._buffer
        if buffer is None or not self.active:
            return True
        return buffer.put_nowait(sig)

    def _close(self) -> None:
        self.active = False
        if self._buffer is not None:
            self._buffer.close()


class Synapse(abc.ABC):
    """A bus: publish Signals on subjects, subscribe handlers to patterns."""

    def __init__(self, *, subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER) -> None:
        if subscription_buffer < 1:
            raise ValueError("subscription_buffer must be >= 1")
        self.subscription_buffer = subscription_buffer
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._active_subs: set[Subscription] = set()

    # -- life cycle --------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._tg is not None

    async def connect(self) -> None:
        """Open the synapse's task group and whatever connection the bus needs."""
        if self._tg is not None:
            return
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack
            await self._open(self._tg)
        except BaseException:
            self._tg = None
            self._stack = None
            await stack.aclose()
            raise

    async def close(self) -> None:
        """Stop every pump and connection task; idempotent."""
        stack, tg = self._stack, self._tg
        if stack is None or tg is None:
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
            self._tg = None
            self._stack = None
            tg.cancel_scope.cancel()
            await stack.aclose()

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

    # -- what adapters implement ------------------------------------------
    @abc.abstractmethod
    async def _open(self, tg: TaskGroup) -> None:
        """Connect; start reader tasks in *tg*."""

    async def _shutdown(self) -> None:
        """Flush and say goodbye before the task group is cancelled (shielded)."""

    @abc.abstractmethod
    async def publish(self, subject: str, signal: Signal) -> None:
        """Deliver *signal* on *subject*."""

    @abc.abstractmethod
    async def _on_subscribe(self, sub: Subscription) -> None:
        """Tell the bus about a new subscription."""

    @abc.abstractmethod
    async def _on_unsubscribe(self, sub: Subscription) -> None:
        """Tell the bus a subscription is gone."""

    # -- shared subscription machinery ------------------------------------
    def _require_tg(self) -> TaskGroup:
        if self._tg is None:
            raise SynapseClosedError(f"{type(self).__name__} is not connected; call connect() first")
        return self._tg

    async def subscribe(
        self, subject: str | Sequence[str], handler: Handler, *, queue_group: str | None = None
    ) -> Subscription:
        """Subscribe *handler* to *subject* (wildcards allowed); returns the Subscription.

        *subject* may be a list of subjects that do not overlap: they share one buffer
        and one pump, so the handler sees their Signals in arrival order.
        """
        tg = self._require_tg()
        subjects = (subject,) if isinstance(subject, str) else tuple(subject)
        if not subjects or not all(subjects):
            raise ValueError("subject must not be empty")
        buffer: SignalBuffer[Signal] = SignalBuffer(self.subscription_buffer)
        sub = Subscription(
            subject=subjects[0], handler=handler, queue_group=queue_group, buffer=buffer, subjects=subjects
        )
        tg.start_soon(self._pump, sub, buffer, name=f"synapse-pump:{subjects[0]}")
        self._active_subs.add(sub)
        try:
            await self._on_subscribe(sub)
        except BaseException:
            self._active_subs.discard(sub)
            sub._close()
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """Remove *sub*; its pump finishes what it already buffered, then ends."""
        if not sub.active:
            return
        sub._close()
        self._active_subs.discard(sub)
        if self._tg is not None:
            await self._on_unsubscribe(sub)

    @staticmethod
    async def _pump(sub: Subscription, buffer: SignalBuffer[Signal]) -> None:
        """Drain one subscription in order, until it is closed and empty."""
        handler = sub.handler
        try:
            while True:
                sig = await buffer.get()
                try:
                    await handler(sig)
                except Exception:
                    log.exception("handler for %s raised on %s %s", sub.subject, sig.type, sig.id)
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
