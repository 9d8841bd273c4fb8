"""``TestSynapse``: run an application unmodified on an in-process bus, like FastStream's TestBroker.

    with TestSynapse() as bus:
        ...  # any connect_synapse("cosmo://…" | "nats://…" | "memory://") now returns a client of `bus`

Inside the block every ``connect_synapse(url)`` (and every ``SyncDendrite(url)``)
gets a fresh connection to one in-process hub instead of a socket.  Connections
may live on different event loops and threads — a test's own loop, the portal
thread of a Flask app's ``SyncDendrite``, a worker started with
:meth:`TestSynapse.background` — and still meet on the hub.

What the hub does that a plain ``MemorySynapse`` does not:

* **wire copies**: each Signal is encoded and decoded as a network bus would
  (``wire=True``), so a Neuron returning something that is not JSON fails the
  way it fails over ``cosmo://``, not by handing a raw object to the caller;
* **a log** of every publish (which connection, subject, Signal), to assert on
  and to wait on without sleeps;
* **faults**: an optional :class:`~.faults.FaultInjector` drops, duplicates,
  delays or reorders chosen Signals, and any connection can be disconnected and
  reconnected (its Dendrites re-register, as over a real bus).

Backpressure is kept: a publish waits until every subscriber's bounded buffer
took the Signal, across loops too (the publisher waits for the other loop's
acknowledgement, bounded by ``publish_timeout_s``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import attrs
from anyio.abc import TaskGroup

from ..codec import decode_signal, encode_signal
from ..errors import SynapseClosedError, SynapseError
from ..signal import Signal
from ..synapse import connect as _connect
from ..synapse.base import DEFAULT_SUBSCRIPTION_BUFFER, Subscription, Synapse
from ..synapse.index import SubscriptionIndex
from .faults import Fault, FaultInjector, FaultKind
from .loopref import LoopRef

__all__ = ["InProcessSynapse", "Published", "TestSynapse", "TestSynapseHub"]

log: logging.Logger = logging.getLogger("cosmonapse.testing.bus")


@attrs.frozen
class Published:
    """One publish seen by the hub: its order, the connection that made it, subject and Signal."""

    seq: int
    origin: str
    subject: str
    signal: Signal


@attrs.frozen(eq=False)
class _Route:
    client: InProcessSynapse
    sub: Subscription


class InProcessSynapse(Synapse):
    """One connection to a :class:`TestSynapseHub` (what ``connect_synapse`` returns under a TestSynapse)."""

    def __init__(
        self,
        hub: TestSynapseHub,
        name: str,
        url: str = "memory://",
        *,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
    ) -> None:
        super().__init__(subscription_buffer=subscription_buffer)
        self.hub = hub
        self.name = name
        self.url = url
        self.loop: LoopRef | None = None
        self.up = True
        self._up_event: anyio.Event | None = None
        # Work other threads hand to this connection, run by its mailbox task (in task context).
        # At most one job per waiting publisher or pending (dis)connect: bounded by its callers.
        self._mail: deque[Callable[[], Awaitable[None]]] = deque()
        self._mail_event: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<InProcessSynapse {self.name!r} for {self.url}>"

    async def _open(self, tg: TaskGroup) -> None:
        self.loop = LoopRef()
        self._up_event = anyio.Event()
        if self.up:
            self._up_event.set()
        self._mail_event = anyio.Event()
        tg.start_soon(self._mailbox, name=f"testsynapse-mailbox:{self.name}")
        self.hub._attach(self)

    async def _mailbox(self) -> None:
        while True:
            while self._mail:
                job = self._mail.popleft()
                try:
                    await job()
                except Exception:
                    log.exception("test bus job for %s failed", self.name)
            event = self._mail_event = anyio.Event()
            if not self._mail:
                await event.wait()

    def post(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``await job()`` in a task of this connection's loop (from any thread); False if gone."""
        loop = self.loop
        if loop is None:
            return False

        def enqueue() -> None:
            self._mail.append(job)
            if self._mail_event is not None:
                self._mail_event.set()

        if loop.is_current():
            enqueue()
            return True
        return loop.soon(enqueue)

    async def _shutdown(self) -> None:
        self.hub._detach(self)

    async def publish(self, subject: str, signal: Signal) -> None:
        if self._tg is None:
            raise SynapseClosedError(f"{self!r} is not connected; call connect() first")
        await self.hub.publish(self, subject, signal)

    async def _on_subscribe(self, sub: Subscription) -> None:
        self.hub._add(self, sub)

    async def _on_unsubscribe(self, sub: Subscription) -> None:
        self.hub._remove(self, sub)

    # -- used by the hub, on this connection's own loop ---------------------------
    async def _wait_up(self, timeout_s: float, what: str) -> None:
        if self.up:
            return
        event = self._up_event
        with anyio.move_on_after(timeout_s):
            while not self.up and event is not None:
                await event.wait()
                event = self._up_event
        if not self.up:
            raise SynapseError(
                f"{self.name} is disconnected from the test bus for {timeout_s:g}s; {what} not sent"
            )

    async def _set_up(self, up: bool) -> None:
        """Runs in this connection's mailbox task."""
        self.up: bool = up
        if up:
            if self._up_event is not None:
                self._up_event.set()
            self._notify_reconnected()
        else:
            self._up_event = anyio.Event()

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool:
        tg = self._tg
        if tg is None:
            return False
        try:
            tg.start_soon(fn, *args)
        except RuntimeError:  # closing
            return False
        return True


class TestSynapseHub:
    """The broker behind a TestSynapse: subscriptions of every connection, the log, the faults.

    Thread-safe: connections on different loops call it; the subscription index
    and the log are guarded by one lock, deliveries run on each subscriber's loop.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        wire: bool = True,
        faults: FaultInjector | None = None,
        publish_timeout_s: float = 5.0,
    ) -> None:
        self.wire = wire
        self.faults = faults
        self.publish_timeout_s = publish_timeout_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._index: SubscriptionIndex[_Route] = SubscriptionIndex()
        self._routes: dict[Subscription, _Route] = {}
        self._clients: dict[str, InProcessSynapse] = {}
        self._names = itertools.count(1)
        self._held: list[tuple[InProcessSynapse, str, Signal]] = []
        self._waiters: list[tuple[LoopRef, anyio.Event]] = []
        #: Every publish, in order.
        self.log: list[Published] = []
        #: Called (on the publisher's loop) for every publish, after it is logged.
        self.taps: list[Callable[[Published], None]] = []
        #: Called on the subscriber's loop after a subscription's handler returned.
        self.after_delivery: list[Callable[[InProcessSynapse, Signal], None]] = []
        #: Called (on the publisher's loop) for each connection that is up but has no
        #: subscription for a Signal the bus delivered: it chose not to hear it.
        self.not_listening: list[Callable[[InProcessSynapse, Signal], None]] = []

    # -- connections ---------------------------------------------------------------
    def synapse(self, name: str | None = None, url: str = "memory://", **kw: Any) -> InProcessSynapse:
        """A new, unconnected connection (``connect()`` it, or hand it to a Dendrite's owner)."""
        with self._lock:
            name = name or f"conn-{next(self._names)}"
        return InProcessSynapse(self, name, url, **kw)

    async def connect(self, name: str | None = None, url: str = "memory://") -> InProcessSynapse:
        """A new, connected connection."""
        client = self.synapse(name, url)
        await client.connect()
        return client

    def client(self, name: str) -> InProcessSynapse:
        with self._lock:
            return self._clients[name]

    @property
    def clients(self) -> dict[str, InProcessSynapse]:
        with self._lock:
            return dict(self._clients)

    def _attach(self, client: InProcessSynapse) -> None:
        with self._lock:
            self._clients[client.name] = client

    def _detach(self, client: InProcessSynapse) -> None:
        with self._lock:
            for sub, route in list(self._routes.items()):
                if route.client is client:
                    for subject in sub.subjects:
                        self._index.remove(subject, route)
                    del self._routes[sub]
            if self._clients.get(client.name) is client:
                del self._clients[client.name]

    def _add(self, client: InProcessSynapse, sub: Subscription) -> None:
        route = _Route(client, self._wrap(client, sub))
        with self._lock:
            self._routes[sub] = route
            for subject in sub.subjects:
                self._index.add(subject, route, sub.queue_group)

    def _remove(self, client: InProcessSynapse, sub: Subscription) -> None:
        with self._lock:
            route = self._routes.pop(sub, None)
            if route is not None:
                for subject in sub.subjects:
                    self._index.remove(subject, route)

    def _wrap(self, client: InProcessSynapse, sub: Subscription) -> Subscription:
        """Let ``after_delivery`` observers see each Signal once the subscriber has handled it."""
        handler = sub.handler

        async def handled(sig: Signal) -> None:
            try:
                await handler(sig)
            finally:
                for fn in list(self.after_delivery):
                    fn(client, sig)

        sub.handler = handled
        return sub

    # -- disconnects ---------------------------------------------------------------
    def disconnect(self, name: str) -> None:
        """Cut connection *name* off: it hears nothing and its publishes wait (then fail)."""
        self._set_up(name, False)

    def reconnect(self, name: str) -> None:
        """Restore connection *name*; its Dendrites are told (they re-REGISTER)."""
        self._set_up(name, True)

    def _set_up(self, name: str, up: bool) -> None:
        client = self.client(name)
        if client.loop is None:
            client.up = up
            return
        if not up:
            client.up = False  # at once: nothing more reaches it
        client.post(functools.partial(client._set_up, up))

    # -- publishing ----------------------------------------------------------------
    async def publish(self, origin: InProcessSynapse, subject: str, signal: Signal) -> None:
        what = f"{signal.type.value} {signal.id} on {subject}"
        await origin._wait_up(self.publish_timeout_s, what)
        if self.wire:
            signal = decode_signal(encode_signal(signal))  # what a network bus would deliver
        with self._lock:
            record = Published(len(self.log), origin.name, subject, signal)
            self.log.append(record)
            targets = self._index.targets(subject)
            held, self._held = self._held, []
            waiters, self._waiters = self._waiters, []
            self._changed.notify_all()
        for tap in list(self.taps):
            tap(record)
        for loop, event in waiters:
            loop.soon(event.set)
        fault = self.faults.verdict(signal) if self.faults is not None else None
        if self.not_listening and (fault is None or fault.kind is FaultKind.DUPLICATE):
            self._tell_not_listening(origin, targets, signal)
        if fault is None:
            await self._deliver_all(origin, targets, signal)
        elif fault.kind is FaultKind.DUPLICATE:
            await self._deliver_all(origin, targets, signal)
            await self._deliver_all(origin, targets, signal)
        elif fault.kind is FaultKind.DELAY:
            if not origin._spawn(self._deliver_later, origin, targets, signal, fault):
                log.debug("delayed %s lost: %s is closing", what, origin.name)
        elif fault.kind is FaultKind.REORDER:
            with self._lock:
                self._held.append((origin, subject, signal))
        # DROP: nobody hears it
        for h_origin, h_subject, h_signal in held:  # overtaken by this one
            with self._lock:
                h_targets = self._index.targets(h_subject)
            await self._deliver_all(h_origin, h_targets, h_signal)

    def _tell_not_listening(self, origin: InProcessSynapse, targets: list[_Route], signal: Signal) -> None:
        listening = {route.client.name for route in targets}
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            if client is not origin and client.up and client.name not in listening:
                for fn in list(self.not_listening):
                    fn(client, signal)

    async def release_held(self) -> int:
        """Deliver Signals a REORDER fault still holds (no later publish came); returns how many."""
        with self._lock:
            held, self._held = self._held, []
        for origin, subject, signal in held:
            with self._lock:
                targets = self._index.targets(subject)
            await self._deliver_all(origin, targets, signal)
        return len(held)

    async def _deliver_later(
        self, origin: InProcessSynapse, targets: list[_Route], signal: Signal, fault: Fault
    ) -> None:
        await anyio.sleep(fault.delay_s)  # allowed: the delay this fault injects
        await self._deliver_all(origin, targets, signal)

    async def _deliver_all(self, origin: InProcessSynapse, targets: list[_Route], signal: Signal) -> None:
        for route in targets:
            client, sub = route.client, route.sub
            if not client.up or not sub.active or client.loop is None:
                continue
            if client.loop.is_current():
                if not sub.deliver_nowait(signal):
                    await sub.deliver(signal)
            else:
                await self._deliver_across(origin, client, sub, signal)

    async def _deliver_across(
        self, origin: InProcessSynapse, client: InProcessSynapse, sub: Subscription, signal: Signal
    ) -> None:
        """Hand *signal* to a subscriber on another loop; wait for its acknowledgement (backpressure)."""
        assert client.loop is not None and origin.loop is not None
        done = anyio.Event()
        home = origin.loop

        async def arrive() -> None:
            try:
                if not sub.deliver_nowait(signal):
                    await sub.deliver(signal)
            finally:
                home.soon(done.set)

        if not client.post(arrive):
            return  # that loop is gone
        with anyio.move_on_after(self.publish_timeout_s):
            await done.wait()

    # -- reading the log -------------------------------------------------------------
    @property
    def signals(self) -> list[Signal]:
        with self._lock:
            return [p.signal for p in self.log]

    def published(self) -> list[Published]:
        with self._lock:
            return list(self.log)

    async def wait_for(
        self, predicate: Callable[[list[Signal]], bool], *, timeout_s: float = 5.0
    ) -> list[Signal]:
        """Wait (on any loop) until *predicate(signals)* holds; ``TimeoutError`` after *timeout_s*."""
        with anyio.fail_after(timeout_s):
            while True:
                event = anyio.Event()
                with self._lock:
                    signals = [p.signal for p in self.log]
                    if not predicate(signals):
                        self._waiters.append((LoopRef(), event))
                if predicate(signals):
                    return signals
                await event.wait()

    def wait_for_blocking(
        self, predicate: Callable[[list[Signal]], bool], *, timeout_s: float = 5.0
    ) -> list[Signal]:
        """``wait_for`` for threads and sync tests (never call it on an event loop's thread)."""
        with self._lock:
            ok = self._changed.wait_for(lambda: predicate([p.signal for p in self.log]), timeout_s)
            signals = [p.signal for p in self.log]
        if not ok:
            raise TimeoutError(f"the condition on the test bus did not hold within {timeout_s:g}s")
        return signals


class TestSynapse(TestSynapseHub):
    """A test bus that every ``connect_synapse(url)`` returns a connection to, inside ``with``.

    Also usable without ``with``: ``await bus.connect()`` gives a connection.
    """

    __test__ = False
    _active = False  # inside its ``with`` block

    def _factory(self, url: str, **kw: Any) -> Synapse:
        # Adapter options (reconnect_delay=, tls=...) mean nothing in-process: ignored.
        buffer = kw.get("subscription_buffer", DEFAULT_SUBSCRIPTION_BUFFER)
        return self.synapse(url=url, subscription_buffer=buffer)

    def __enter__(self) -> TestSynapse:
        if self._active:
            raise RuntimeError("this TestSynapse is already active")
        _connect.OVERRIDES.append(self._factory)
        self._active = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        try:
            _connect.OVERRIDES.remove(self._factory)
        except ValueError:
            pass

    @contextmanager
    def background(
        self,
        main: Callable[..., Awaitable[Any]],
        *args: Any,
        backend: str = "asyncio",
        stop_timeout_s: float = 10.0,
    ) -> Iterator[None]:
        """Run ``await main(*args)`` (say, a worker's unmodified ``main()``) on its own loop for the block.

        It is cancelled when the block ends and joined before ``with`` returns; if it
        failed, its exception is raised there.
        """
        failure: BaseException | None = None
        # allowed: a thread for the worker's own loop, cancelled and joined when the block ends
        with anyio.from_thread.start_blocking_portal(backend, name=f"testsynapse-{main.__name__}") as portal:
            future = portal.start_task_soon(main, *args)
            try:
                yield
            finally:
                future.cancel()
                try:
                    future.result(timeout=stop_timeout_s)
                except concurrent.futures.CancelledError:
                    pass  # what we asked for
                except BaseException as exc:
                    failure = exc
        if failure is not None:
            raise failure
