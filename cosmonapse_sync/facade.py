"""``SyncDendrite``: the Dendrite API for blocking code (Flask, Django, WSGI, scripts).

One facade per process, shared by every request thread.  It holds what a
Dendrite is made of — the synapse URL or factory, the constructor arguments,
the Axons, handlers, hooks and subscriptions — and builds the real Dendrite
inside its portal thread on first use.  That is what makes it fork-safe: a
child process's first call builds a fresh portal, connection and Dendrite from
the same records, so its Axons are announced (REGISTER) and its handlers
subscribed again, while the parent's stay untouched.

Every public method of ``Dendrite`` has a blocking twin here with the same name
and parameters; most are generated source (``_generated_dendrite.DendriteTwins``,
written by ``python -m cosmonapse_sync._codegen``), the ones below that need
more are written out.  ``dispatch_and_wait`` is the important one: its timeout
runs on the loop, and when it fires (or the caller is interrupted) the wait is
cancelled and a STOP for the trace is published, and acknowledged or given up
on within ``stop_ack_timeout_s``, before the call raises.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import attrs

from cosmonapse.axon import Axon
from cosmonapse.dendrite import Dendrite
from cosmonapse.engram.base import Engram
from cosmonapse.errors import DendriteProtocolError
from cosmonapse.handlers import HandlerDecorators, HandlerFn, HandlerSpec
from cosmonapse.ids import new_trace_id
from cosmonapse.lifecycle import HookFn, HookKind, LifecycleHooks
from cosmonapse.pathway import Pathway, PathwayScope
from cosmonapse.retry import RetryStrategy
from cosmonapse.signal import Signal, SignalType
from cosmonapse.synapse.base import Subscription, Synapse
from cosmonapse.synapse.connect import make_synapse
from cosmonapse.synapse.memory import MemorySynapse
from cosmonapse.telemetry import facade_call

from ._generated_dendrite import DendriteTwins
from .adapt import adapt_axon, to_async
from .errors import FacadeClosedError
from .pathway import SyncPathway, confirm_stop
from .portal import CURRENT_LOOP, Portal, PortalLoop, _running_async_library

__all__ = ["SyncDendrite", "SyncSubscription"]

log: logging.Logger = logging.getLogger("cosmonapse_sync.facade")

SynapseFactory = Callable[[], Synapse | Awaitable[Synapse]]
#: Extra seconds the caller of dispatch_and_wait waits beyond its own timeout before the backstop.
_BACKSTOP_MARGIN_S = 5.0
_FACADES: weakref.WeakSet[SyncDendrite] = weakref.WeakSet()


@attrs.define(eq=False)
class SyncSubscription:
    """A ``subscribe()`` made through the facade; re-made on each new portal (after fork)."""

    signal_type: SignalType
    handler: HandlerFn
    queue_group: str | None = None
    live: Subscription | None = None
    _owner: SyncDendrite | None = attrs.field(default=None, repr=False, alias="owner")

    def unsubscribe(self) -> None:
        """Undo ``subscribe()``: the same as ``facade.unsubscribe(sub)``."""
        if self._owner is not None:
            self._owner.unsubscribe(self)


class SyncDendrite(DendriteTwins, HandlerDecorators, LifecycleHooks):
    """A blocking, fork-safe facade over one ``Dendrite`` running in a background portal thread.

    ``synapse`` is a URL (``memory://``, ``cosmo://host:port``, ``nats://...``) or a
    factory returning a fresh, unconnected Synapse; the facade connects and closes it
    in its portal.  Other keywords go to ``Dendrite(...)`` (``namespace``,
    ``dendrite_id``, ``role``, ...).
    """

    def __init__(
        self,
        synapse: str | SynapseFactory,
        *,
        backend: str = "asyncio",
        start_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
        stop_ack_timeout_s: float = 1.0,
        worker_threads: int = 40,
        **dendrite_kwargs: Any,
    ) -> None:
        if not isinstance(synapse, str) and not callable(synapse):
            raise TypeError("synapse must be a URL or a callable returning a Synapse")
        if isinstance(synapse, str):
            make_synapse(synapse)  # a bad URL fails here, not in the first request
        # Validates every Dendrite argument now (no I/O: a Dendrite does nothing until started).
        self._template = Dendrite(synapse=MemorySynapse(), **dendrite_kwargs)
        self._synapse = synapse
        self._kwargs = dendrite_kwargs
        self.stop_ack_timeout_s = stop_ack_timeout_s
        self._records = threading.Lock()
        self._axons: dict[str, tuple[Axon, Axon]] = {}
        self._specs: list[HandlerSpec] = []
        self._hooks: list[tuple[HookKind, HookFn, float | None]] = []
        self._subs: list[SyncSubscription] = []
        self._engrams: list[Engram] = []
        self._live: tuple[PortalLoop, Dendrite] | None = None
        self._close_reason: str | None = None
        self._portal = Portal(
            self._setup,
            backend=backend,
            name=f"cosmonapse-portal:{self._template.dendrite_id}",
            start_timeout_s=start_timeout_s,
            close_timeout_s=close_timeout_s,
            worker_threads=worker_threads,
        )
        _FACADES.add(self)

    # ------------------------------------------------------------------ info
    @property
    def namespace(self) -> str:
        return self._template.namespace

    @property
    def dendrite_id(self) -> str:
        return self._template.dendrite_id

    @property
    def role(self) -> str:
        """``"orchestrator"`` or ``"worker"``, as configured."""
        return self._template.role

    @property
    def backend(self) -> str:
        """The portal's event loop library: ``"asyncio"`` or ``"trio"``."""
        return self._portal.backend

    @property
    def running(self) -> bool:
        """True while this process has a started portal (not before first use, after close, in a new fork)."""
        return self._portal.live is not None

    @property
    def closed(self) -> bool:
        return self._portal.closed

    @property
    def axons(self) -> dict[str, Axon]:
        """The Axons attached through the facade (as given, not the thread-adapted copies)."""
        with self._records:
            return {nid: original for nid, (original, _) in self._axons.items()}

    @property
    def engrams(self) -> dict[str, Engram]:
        """The engrams attached through the facade, by id."""
        with self._records:
            return {e.engram_id: e for e in self._engrams}

    @property
    def capabilities(self) -> list[str]:
        """Every attached Axon's capabilities, sorted and de-duplicated."""
        return sorted({c for a in self.axons.values() for c in a.capabilities})

    @property
    def dendrite(self) -> Dendrite | None:
        """The live async Dendrite, for async code the portal runs (``facade.call``); None if not started."""
        loop = self._portal.live
        return loop.value if loop is not None else None

    @property
    def portal_thread(self) -> threading.Thread | None:  # allowed: the facade portal (read only)
        loop = self._portal.live
        return loop.thread if loop is not None else None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running" if self.running else "idle"
        return (
            f"<SyncDendrite {self.dendrite_id!r} ns={self.namespace!r} {self.role} {state} "
            f"backend={self.backend} axons={list(self.axons)}>"
        )

    # ------------------------------------------------------------ the portal's owner task
    async def _open_synapse(self) -> Synapse:
        if isinstance(self._synapse, str):
            return make_synapse(self._synapse)
        made = self._synapse()
        if inspect.isawaitable(made):
            made = await made
        if not isinstance(made, Synapse):
            raise TypeError(f"the synapse factory returned {type(made).__name__}, not a Synapse")
        return made

    async def _setup(self, stack: AsyncExitStack) -> Dendrite:
        """Build and start this process's Dendrite from the records (runs in the portal's owner task)."""
        synapse = await self._open_synapse()
        await stack.enter_async_context(synapse)
        dendrite = Dendrite(synapse=synapse, **self._kwargs)
        loop = CURRENT_LOOP.get()
        with self._records:
            for _, adapted in self._axons.values():
                dendrite.attach_axon(adapted)
            for engram in self._engrams:
                dendrite.attach_engram(engram)
            for spec in self._specs:
                dendrite._add_handler(spec)
            for kind, fn, every_s in self._hooks:
                dendrite._add_hook(kind, to_async(fn), every_s)
            subs = list(self._subs)
            self._live = (loop, dendrite)  # from here on, record changes are forwarded
        try:
            await stack.enter_async_context(dendrite)
            stack.push_async_callback(self._stop_dendrite, dendrite)
            for sub in subs:
                sub.live = await dendrite.subscribe(sub.signal_type, sub.handler, queue_group=sub.queue_group)
        except BaseException:
            with self._records:
                if self._live is not None and self._live[1] is dendrite:
                    self._live = None
            raise
        return dendrite

    async def _stop_dendrite(self, dendrite: Dendrite) -> None:
        with self._records:
            if self._live is not None and self._live[1] is dendrite:
                self._live = None
        await dendrite.stop(self._close_reason)

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start the portal now (else the first call does): connect, REGISTER Axons; raises on failure."""
        self._portal.current("start()")

    def stop(self, reason: str | None = None) -> None:
        """Close, with *reason* in the DEREGISTER of each Axon."""
        self._close_reason = reason
        self.close()

    def close(self, timeout_s: float | None = None) -> bool:
        """Cancel in-flight calls, DEREGISTER, disconnect and join our threads within ``timeout_s``.

        Final and idempotent; True if everything ended within the deadline.  Also run at
        interpreter exit for facades still open.
        """
        return self._portal.close(timeout_s)

    def __enter__(self) -> SyncDendrite:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ calls
    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await fn(*args)`` on the portal (``facade.dendrite`` is the live Dendrite there)."""
        with facade_call("call"):  # OpenTelemetry: counted and timed (no-op when off)
            return self._portal.current("call()").call(fn, *args, what="call()")

    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        what = f"{name}()"
        with facade_call(name):
            return self._portal.current(what).call(_on_dendrite, self, name, args, kwargs, what=what)

    def _read(self, name: str) -> Any:
        return getattr(self.dendrite or self._template, name)

    def _wrap(self, result: Any, loop: PortalLoop) -> Any:
        """The async side's result, each ``Pathway`` in it (alone or in a list) made a ``SyncPathway``."""
        if isinstance(result, Pathway):
            return SyncPathway(result, loop, self.stop_ack_timeout_s)
        if isinstance(result, list) and result and all(isinstance(r, Pathway) for r in result):
            return [SyncPathway(r, loop, self.stop_ack_timeout_s) for r in result]
        return result

    def dispatch_and_wait(
        self,
        *,
        neuron: str | None = None,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        timeout_s: float | None = 30.0,
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        retry: RetryStrategy | None = None,
        **kw: Any,
    ) -> Signal:
        """Dispatch, wait for the reply; on timeout or interrupt, cancel and STOP the trace, then raise.

        Same parameters as ``Dendrite.dispatch_and_wait``.  The timeout runs on the
        loop; the caller's own wait is bounded by a backstop a little beyond it.  With
        ``retry=`` the retry strategy owns its traces (it STOPs abandoned attempts).
        """
        call: dict[str, Any] = {
            "neuron": neuron, "input": input, "capabilities": capabilities, "timeout_s": timeout_s,
            "scope": scope, "finalize": finalize, "retry": retry, **kw,
        }  # fmt: skip
        backstop = None
        if retry is None:
            call["trace_id"] = call.get("trace_id") or new_trace_id()
            if timeout_s is not None:
                backstop = timeout_s + self.stop_ack_timeout_s + _BACKSTOP_MARGIN_S
        with facade_call("dispatch_and_wait"):
            return self._portal.current("dispatch_and_wait()").call(
                self._dispatch_and_wait,
                call,
                backstop_s=backstop,
                cancel_grace_s=self.stop_ack_timeout_s + 2.0,
                what="dispatch_and_wait()",
            )

    async def _dispatch_and_wait(self, call: dict[str, Any]) -> Signal:
        dendrite: Dendrite = CURRENT_LOOP.get().value
        if call.get("retry") is not None:
            return await dendrite.dispatch_and_wait(**call)

        async def give_up(trace_id: str, reason: str) -> None:
            # The async call STOPs the trace it gives up on; here that STOP also waits
            # (bounded) for the first STOPPED, so the worker has quiesced when we raise.
            await confirm_stop(dendrite, trace_id, reason, self.stop_ack_timeout_s)

        return await dendrite._dispatch_and_wait_giving_up(
            give_up, **{k: v for k, v in call.items() if k != "retry"}
        )

    # ------------------------------------------------------------ records (replayed on each new portal)
    def _record(self, change: Callable[[], Any], forward: Callable[[Dendrite], Awaitable[Any]] | None) -> Any:
        """Apply *change* to the records; if a Dendrite is live here, apply *forward* to it too."""
        with self._records:
            change()
            live = self._live  # set from the moment the records are read, before start-up ends
            if live is None or forward is None or live[0].finished or live[0].pid != os.getpid():
                return None
            loop, dendrite = live
            # A loop thread cannot block on its own (or any) loop: schedule without waiting.
            can_wait = threading.get_ident() != loop.ident and _running_async_library() is None
            collect = loop.submit(forward, dendrite, wait=can_wait)
        try:
            return collect()
        except FacadeClosedError:
            return None  # the loop went away; the record is replayed on the next one

    def _add_handler(self, spec: HandlerSpec) -> None:
        spec = attrs.evolve(spec, fn=to_async(spec.fn))

        async def forward(d: Dendrite) -> None:
            d._add_handler(spec)

        self._record(lambda: self._specs.append(spec), forward)

    def _add_hook(self, kind: HookKind, fn: HookFn, every_s: float | None) -> None:
        """Every hook kind: sync functions run in worker threads; kept across forks."""

        async def forward(d: Dendrite) -> None:
            d._add_hook(kind, to_async(fn), every_s)

        self._record(lambda: self._hooks.append((kind, fn, every_s)), forward)

    def attach_axon(self, axon: Axon) -> None:
        """Host *axon* (a plain-function Neuron runs in worker threads).  Attached before the first
        call, it is REGISTERed at start and again in every forked child; on a running facade use
        ``add_axon`` to announce it at once."""
        adapted = adapt_axon(axon)

        def change() -> None:
            if axon.neuron_id in self._axons:
                raise DendriteProtocolError(f"an Axon with neuron_id {axon.neuron_id!r} is already attached")
            self._axons[axon.neuron_id] = (axon, adapted)

        async def forward(d: Dendrite) -> None:
            d.attach_axon(adapted)

        self._record(change, forward)

    def add_axon(self, axon: Axon) -> None:
        """Attach *axon* and REGISTER it now (starting the facade if needed)."""
        self.start()
        adapted = adapt_axon(axon)

        def change() -> None:
            if axon.neuron_id in self._axons:
                raise DendriteProtocolError(f"an Axon with neuron_id {axon.neuron_id!r} is already attached")
            self._axons[axon.neuron_id] = (axon, adapted)

        async def forward(d: Dendrite) -> None:
            await d.add_axon(adapted)

        self._record(change, forward)

    def detach_axon(self, neuron_id: str, *, reason: str | None = None) -> None:
        """Stop hosting *neuron_id* and DEREGISTER it."""
        self.start()

        def change() -> None:
            if self._axons.pop(neuron_id, None) is None:
                raise DendriteProtocolError(f"no Axon {neuron_id!r} is attached")

        async def forward(d: Dendrite) -> None:
            await d.detach_axon(neuron_id, reason=reason)

        self._record(change, forward)

    def attach_engram(self, engram: Engram) -> None:
        """Host *engram* (RECALL/IMPRINT); kept across forks like an Axon.  Its owner closes it."""

        async def forward(d: Dendrite) -> None:
            d.attach_engram(engram)

        self._record(lambda: self._engrams.append(engram), forward)

    def detach_engram(self, engram_id: str) -> None:
        """Stop hosting *engram_id*."""
        self.start()

        def change() -> None:
            self._engrams[:] = [e for e in self._engrams if e.engram_id != engram_id]

        async def forward(d: Dendrite) -> None:
            await d.detach_engram(engram_id)

        self._record(change, forward)

    def subscribe(
        self, signal_type: SignalType, handler: HandlerFn, *, queue_group: str | None = None
    ) -> SyncSubscription:
        """A raw subscription to one type (sync *handler* in a worker thread); kept across forks."""
        self.start()
        sub = SyncSubscription(SignalType(signal_type), to_async(handler), queue_group, owner=self)

        async def forward(d: Dendrite) -> None:
            sub.live = await d.subscribe(sub.signal_type, sub.handler, queue_group=queue_group)

        self._record(lambda: self._subs.append(sub), forward)
        return sub

    def unsubscribe(self, sub: SyncSubscription) -> None:
        """Undo ``subscribe()``."""

        def change() -> None:
            if sub in self._subs:
                self._subs.remove(sub)

        async def forward(d: Dendrite) -> None:
            if sub.live is not None:
                await d.unsubscribe(sub.live)
                sub.live = None

        self._record(change, forward)

    def _after_fork_in_child(self) -> None:
        self._records = threading.Lock()
        self._live = None


async def _on_dendrite(facade: SyncDendrite, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    loop = CURRENT_LOOP.get()
    result = getattr(loop.value, name)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return facade._wrap(result, loop)


def _after_fork_in_child() -> None:
    for facade in list(_FACADES):
        facade._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
