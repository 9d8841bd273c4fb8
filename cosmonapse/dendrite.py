"""``Dendrite``: the only thing that touches the Synapse (seed 004), as a face over a small core.

A Dendrite is composed, not inherited: one ``Core`` (publish, subscriptions and
the routing table, bounded pools, per-trace cancel scopes, Pathway and op
tables, guards) and services built on it, each owning its state and declaring
the Signal types it handles:

=====================  ================================================
``AxonHosting``        Axons: REGISTER/HEARTBEAT/DEREGISTER, TASK → run
``Handlers``           every ``on_*`` decorator, ``on_trace``
``Hooks``              ``on_connect``, ``on_refresh``, ``on_schedule``
``StopService``        STOP/STOPPED, tombstones, cancellation
``EngramService``      hosted Engrams (RECALL/IMPRINT, sagas), recall/imprint
``RegistryService``    presence mirror, liveness sweep, registry reads
``Bidding``            offers, bids, awards, the auto-bidder
``Decisions``          clarification / permission answers
=====================  ================================================

Every public method of the seed is here; most delegate to the service that
owns the work.  The dispatch family is the core's own: one path from TASK to
reply, used by ``dispatch_and_wait`` and by every retry attempt.

``start()`` and ``stop()`` may be called from any task (a fixture, an ASGI
lifespan hook, inside ``fail_after``): the core's task group belongs to a root
task of its own, joined by ``stop()``.  ``async with dendrite:`` is still the
recommended form.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

import anyio

from .axon import Axon
from .bidding import Bidding
from .context import current_task
from .core import DEFAULT_MAX_OPEN_PATHWAYS, Core, DendriteStats, Role
from .decisions import Decisions
from .dispatching import describe_target, request_signal, require_target, task_payload
from .emitters import CognitionEmitters
from .engram.base import Engram
from .engram.client import EngramService
from .engram.model import ImprintReceipt, RecallResult
from .errors import DendriteProtocolError, DispatchTimeout, PathwayTimeout, SynapseClosedError
from .handlers import HandlerDecorators, HandlerFn, Handlers, HandlerSpec
from .hosting import AxonHosting, TaskLoad
from .lifecycle import HookFn, HookKind, Hooks, LifecycleHooks
from .pathway import DEFAULT_PATHWAY_BUFFER, Pathway, PathwayScope
from .registry.mirror import RegistryService
from .registry.record import NeuronRecord
from .registry.store import RegistryStore
from .retry import RetryStrategy, require_strategy, retry_loop
from .signal import ORCHESTRATION_TYPES, SYNAPSE_TYPES, WAIT_TYPES, Signal, SignalType
from .stops import StopService, StopTombstones, TraceStoppedError, find_ledger
from .synapse.base import Subscription, Synapse
from .telemetry import SWITCH as _TEL
from .telemetry import dispatching, retrying

__all__ = ["Dendrite", "current_task"]

log: logging.Logger = logging.getLogger("cosmonapse.dendrite")

T = SignalType
_ROLES = ("orchestrator", "worker")
#: What a call does with a trace it gives up on: ``(trace_id, reason)``, shielded, bounded, never raises.
GiveUp = Callable[[str, str], Awaitable[None]]


async def _traced_reply(
    reply: Awaitable[Signal], neuron: str | None, capabilities: list[str] | None, meta: Any
) -> Signal:
    """*reply* (``_await_reply``'s coroutine, not started yet) inside a CLIENT span, with the
    latency metric (OpenTelemetry on)."""
    with dispatching(neuron, capabilities, meta) as call:
        return call.reply(await reply)


class Dendrite(CognitionEmitters, HandlerDecorators, LifecycleHooks):
    """Hosts Axons and exposes every orchestration primitive."""

    def __init__(
        self,
        *,
        synapse: Synapse,
        registry_store: RegistryStore | None = None,
        namespace: str = "default",
        dendrite_id: str = "dendrite",
        heartbeat_s: float = 30.0,
        reregister_on_heartbeat: bool = True,
        role: Literal["orchestrator", "worker"] = "orchestrator",
        auto_bid: bool = True,
        stale_after_s: float | None = None,
        max_concurrent_tasks: int = 10_000,
        max_concurrent_handlers: int = 256,
        pathway_buffer: int = DEFAULT_PATHWAY_BUFFER,
        shutdown_timeout_s: float = 5.0,
        max_open_pathways: int = DEFAULT_MAX_OPEN_PATHWAYS,
    ) -> None:
        if role not in _ROLES:
            raise ValueError(f"role must be 'orchestrator' or 'worker', not {role!r}")
        if not namespace or any(c in namespace for c in ".*> \t"):
            raise ValueError(f"namespace must be one subject token (no '.', '*', '>', spaces): {namespace!r}")
        if max_concurrent_tasks < 1 or max_concurrent_handlers < 1:
            raise ValueError("concurrency limits must be >= 1")
        if max_open_pathways < 1:
            raise ValueError("max_open_pathways must be >= 1")
        self.synapse = synapse
        self.registry_store = registry_store
        self.namespace = namespace
        self.dendrite_id = dendrite_id
        self.heartbeat_s = heartbeat_s
        self.reregister_on_heartbeat = reregister_on_heartbeat
        self.stale_after_s = stale_after_s
        self.max_concurrent_tasks = max_concurrent_tasks
        self.max_concurrent_handlers = max_concurrent_handlers
        self.pathway_buffer = pathway_buffer
        self.shutdown_timeout_s = shutdown_timeout_s
        core = self._core = Core(
            synapse,
            namespace=namespace,
            dendrite_id=dendrite_id,
            role=role,
            max_concurrent_tasks=max_concurrent_tasks,
            max_concurrent_handlers=max_concurrent_handlers,
            pathway_buffer=pathway_buffer,
            shutdown_timeout_s=shutdown_timeout_s,
            tombstones=StopTombstones(),
            max_open_pathways=max_open_pathways,
        )
        # The services, in the order their routes run for one Signal and they start.
        self._hooks = Hooks(core, announce=self._reannounce)
        self._hosting = AxonHosting(
            core,
            heartbeat_s=heartbeat_s,
            reregister_on_heartbeat=reregister_on_heartbeat,
            answers_discover=lambda: not self._handlers.has(T.DISCOVER),
            refreshed=self._hooks.fire_refresh,
            context_host=self,
        )
        self._engrams = EngramService(core)
        self._registry = RegistryService(
            core,
            self._hosting,
            registry_store,
            heartbeat_s=heartbeat_s,
            stale_after_s=stale_after_s,
            refreshed=self._hooks.fire_refresh,
            presence_wanted=lambda: self._handlers.wants_presence(),
        )
        self._stops = StopService(
            core, self._engrams, lambda: find_ledger(registry_store, *self._engrams.host.engrams.values())
        )
        self._bidding = Bidding(
            core, self._hosting, lambda: self._handlers.has(T.TASK_OFFER), auto_bid=auto_bid
        )
        self._decisions = Decisions(core, self.emit, self.dispatch_task)
        self._handlers = Handlers(core, self._registry.has_capability)  # last: user handlers run after
        for service in (
            self._hosting,
            self._engrams,
            self._registry,
            self._stops,
            self._bidding,
            self._decisions,
            self._hooks,
            self._handlers,
        ):
            core.add_service(service)

    # ------------------------------------------------------------------ info
    @property
    def role(self) -> Role:
        """``"orchestrator"`` (may dispatch and STOP) or ``"worker"``."""
        return self._core.role

    @property
    def capabilities(self) -> list[str]:
        """Every attached Axon's capabilities, sorted and de-duplicated."""
        return self._hosting.capabilities

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._core.running

    @property
    def axons(self) -> dict[str, Axon]:
        """The attached Axons, by neuron id (a copy)."""
        return dict(self._hosting.axons)

    @property
    def task_load(self) -> TaskLoad:
        """TASKs running, the limit, and what load shedding did (waited, declined, refused as STOPped)."""
        return self._hosting.load()

    @property
    def engrams(self) -> dict[str, Engram]:
        """The engrams this Dendrite hosts, by id (a copy)."""
        return dict(self._engrams.host.engrams)

    @property
    def auto_bid(self) -> bool:
        """Bid on TASK_OFFERs for hosted Axons (unless an ``on_task_offer`` handler does)."""
        return self._bidding.auto_bid

    @auto_bid.setter
    def auto_bid(self, value: bool) -> None:
        self._bidding.auto_bid = value
        self._core.refresh()

    @property
    def engram_deadline_ms(self) -> int:
        """Deadline of recall / acknowledged imprint calls that give none (5000 unless set)."""
        return self._engrams.deadline_ms

    @engram_deadline_ms.setter
    def engram_deadline_ms(self, value: int) -> None:
        self._engrams.deadline_ms = value

    @property
    def max_open_pathways(self) -> int:
        """Open Pathways kept before the oldest one nobody reads is closed (10,000 unless set)."""
        return self._core.max_open_pathways

    @property
    def stats(self) -> DendriteStats:
        """Counters of what this Dendrite dropped or refused on purpose (silenced, duplicates, evictions)."""
        return self._core.stats()

    @property
    def effective_stale_after_s(self) -> float:
        """``stale_after_s``, defaulting to three heartbeats; 0 means no sweep."""
        return self._registry.effective_stale_after_s

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        axons = list(self._hosting.axons)
        return f"<Dendrite {self.dendrite_id!r} ns={self.namespace!r} {self.role} {state} axons={axons}>"

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Subscribe, REGISTER every Axon, start heartbeats and schedules; from any task.

        Fails loudly: if anything in here fails (the synapse is not connected, a
        first publish fails, a Neuron's service does not start), what was started
        is stopped again and the error is raised.
        """
        core = self._core
        if core.running:
            raise DendriteProtocolError(f"Dendrite {self.dendrite_id!r} is already running")
        if not self.synapse.connected:
            raise SynapseClosedError(
                f"Dendrite {self.dendrite_id!r} cannot start: its synapse is not connected "
                "(connect it first: `await synapse.connect()` or `async with synapse:`)"
            )
        try:
            await core.open()
            for service in core.services:
                await service.start()
            await core.settle()
            for service in core.services:
                await service.announce()
            core.start_clock()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                try:
                    await self._shut_down(None)
                except Exception as cleanup:  # the start-up failure is the one to report
                    exc.__context__ = cleanup
            raise

    async def stop(self, reason: str | None = None) -> None:
        """Cancel in-flight work, DEREGISTER every Axon, unsubscribe; idempotent, from any task.

        The Synapse (and registry store) are not closed: the caller owns them.  A
        failure of a background task of this Dendrite is raised here.
        """
        await self._shut_down(reason)

    async def _shut_down(self, reason: str | None) -> None:
        core = self._core
        if not core.is_open:
            return
        try:
            await core.close()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_timeout_s):
                for service in core.services:
                    try:
                        await service.stopped(reason)
                    except Exception:
                        log.warning("%s: %r failed to stop", self.dendrite_id, service, exc_info=True)
                await self._hosting.close_neurons()

    async def __aenter__(self) -> Dendrite:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _reannounce(self) -> None:
        await self._hosting.register_all()

    # ------------------------------------------------------------------ Axons
    def attach_axon(self, axon: Axon) -> None:
        """Host *axon*.  On a running Dendrite use ``add_axon`` (it announces at once)."""
        self._hosting.attach(axon)

    async def add_axon(self, axon: Axon) -> None:
        """Attach *axon* while running: subscribe as needed and REGISTER it now."""
        await self._hosting.add(axon)

    async def detach_axon(self, neuron_id: str, *, reason: str | None = None) -> None:
        """Stop hosting *neuron_id* and DEREGISTER it."""
        await self._hosting.detach(neuron_id, reason)

    # ------------------------------------------------------------------ handlers and hooks
    def _add_handler(self, spec: HandlerSpec) -> None:
        self._core.on_loop(self._file_handler, spec)

    def _file_handler(self, spec: HandlerSpec) -> None:
        knew = self._registry.wants_presence()
        self._handlers.add(spec)
        roster = T.REGISTER in (spec.types or ()) or (not knew and self._registry.wants_presence())
        if roster and self.running:
            self._registry.discover_soon()  # a roster registered late still hears who is there

    def _add_hook(self, kind: HookKind, fn: HookFn, every_s: float | None) -> None:
        self._core.on_loop(self._hooks.add, kind, fn, every_s)

    async def subscribe(
        self, signal_type: SignalType, handler: HandlerFn, *, queue_group: str | None = None
    ) -> Subscription:
        """A raw subscription to one type; *handler* runs as a bounded job per Signal."""
        if not self.running:
            raise DendriteProtocolError("subscribe() needs a running Dendrite (inside `async with`)")
        return await self._core.subscribe_raw(signal_type, handler, queue_group)

    async def unsubscribe(self, sub: Subscription) -> None:
        """Undo ``subscribe()`` (``await sub.unsubscribe()`` does the same)."""
        await self._core.unsubscribe_raw(sub)

    async def ensure_subscribed(self, *types: SignalType) -> None:
        """Wait until *types* (or, with none given, every handler's types) are subscribed.

        Handlers registered on a running Dendrite are live before the next publish of
        any Dendrite on this synapse anyway; this is the explicit form, for Signals
        that come from elsewhere (another process, a raw ``synapse.publish``).
        """
        if types:
            await self._core.want(*(SignalType(t) for t in types))
        else:
            await self._core.settle()

    # ------------------------------------------------------------------ publishing
    async def emit(self, signal: Signal) -> None:
        """Publish *signal*: only SYNAPSE_TYPES, and orchestration Signals only from an orchestrator.

        A worker's ``emit()`` refuses ``ORCHESTRATION_TYPES`` (TASK, STOP, FINAL, ERROR,
        PLAN, the cognition stream, offers and awards): workers serve TASKs and bid
        (``bid()``), answer and decide, discover and remember; their Neurons stream
        through their ``NeuronContext``.
        """
        if signal.type not in SYNAPSE_TYPES:
            raise DendriteProtocolError(
                f"emit() refuses {signal.type.value}: only the Axon/lifecycle paths may publish it"
            )
        if signal.type in ORCHESTRATION_TYPES:
            self._core.require_orchestrator(f"emit({signal.type.value})")
        self._core.require_running("emit()")
        if signal.trace_id in self._core.tombstones and signal.type is not T.STOP:
            ambient = current_task.get()
            if ambient is not None and ambient.trace_id == signal.trace_id:
                self._core.silence(signal)  # the trace's own work, STOPped here: dropped, counted
                return
            raise TraceStoppedError(
                f"emit({signal.type.value}): trace {signal.trace_id} was STOPped; nothing more is "
                "published on it (start a new trace instead)"
            )
        await self._core.publish(signal)

    # ------------------------------------------------------------------ Pathways
    def open_pathways(self, trace_id: str | None = None) -> list[Pathway]:
        """The Pathways open on this Dendrite (on one trace, or all)."""
        return self._core.pathways(trace_id)

    async def observe_pathway(self, trace_id: str, *, scope: PathwayScope = "all") -> Pathway:
        """Watch a trace another peer started (no TASK is emitted)."""
        self._core.require_running("observe_pathway()")
        await self._core.want_pathways()
        return self._core.open_pathway(trace_id, "observer", scope)

    # ------------------------------------------------------------------ dispatch
    def _task(
        self,
        *,
        neuron: str | None,
        input: dict[str, Any],
        trace_id: str | None,
        parent_id: str | None,
        context_ref: str | None,
        capabilities: list[str] | None,
        finalize: bool,
        meta: dict[str, Any] | None,
        open_call: bool,
        what: str,
    ) -> Signal:
        if open_call or not (neuron or capabilities):
            require_target(neuron, capabilities, open_call, what)
        return request_signal(
            self._core, T.TASK, input=input, payload=task_payload(context_ref, capabilities, finalize),
            neuron=neuron, trace_id=trace_id, parent_id=parent_id, meta=meta, what="TASK",
        )  # fmt: skip

    async def dispatch_task(
        self,
        *,
        neuron: str | None = None,
        input: dict[str, Any],
        trace_id: str | None = None,
        parent_id: str | None = None,
        context_ref: str | None = None,
        capabilities: list[str] | None = None,
        finalize: bool = False,
        meta: dict[str, Any] | None = None,
        open_call: bool = False,
    ) -> Signal:
        """Publish a TASK to ``neuron=`` or to ``capabilities=`` (one is required); returns it.

        ``open_call=True`` (and neither) sends the reference's open call instead: the
        first ``catch_all`` Axon of every host runs it.
        """
        core = self._core
        core.require_orchestrator("dispatch_task()")
        core.require_running("dispatch_task()")
        task = self._task(
            neuron=neuron, input=input, trace_id=trace_id, parent_id=parent_id, context_ref=context_ref,
            capabilities=capabilities, finalize=finalize, meta=meta, open_call=open_call,
            what="dispatch_task()",
        )  # fmt: skip
        await core.publish(task)
        return task

    async def dispatch(
        self,
        *,
        neuron: str | None = None,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        context_ref: str | None = None,
        meta: dict[str, Any] | None = None,
        open_call: bool = False,
    ) -> Pathway:
        """Open a Pathway on a (new) trace, then publish the TASK; returns the Pathway.

        The TASK goes to ``neuron=`` or ``capabilities=`` (one is required), or with
        ``open_call=True`` to every host's first ``catch_all`` Axon.
        """
        task = await self._originating_task(
            neuron, input, capabilities, scope, finalize, trace_id=trace_id, parent_id=parent_id,
            context_ref=context_ref, meta=meta, open_call=open_call, what="dispatch()",
        )  # fmt: skip
        pw = self._open_originator(task, scope)  # before the publish, which may wait: replies find it
        try:
            await self._core.publish(task)
        except BaseException:
            pw._close_now()
            raise
        return pw

    def _open_originator(self, task: Signal, scope: PathwayScope) -> Pathway:
        """The originator Pathway of *task*'s trace (``_originating_task`` has made sure it may open)."""
        pw = self._core.open_pathway(task.trace_id, "originator", scope)
        pw.task = task
        return pw

    async def _originating_task(
        self,
        neuron: str | None,
        input: dict[str, Any],
        capabilities: list[str] | None,
        scope: PathwayScope,
        finalize: bool | None,
        *,
        trace_id: str | None = None,
        parent_id: str | None = None,
        context_ref: str | None = None,
        meta: dict[str, Any] | None = None,
        open_call: bool = False,
        what: str = "dispatch_and_wait()",
    ) -> Signal:
        """The TASK of a dispatch, once its originator Pathway is sure to open: the Pathway
        types are subscribed and no other originator holds the trace."""
        core = self._core
        core.require_orchestrator(what)
        core.require_running(what)
        task = self._task(
            neuron=neuron, input=input, trace_id=trace_id, parent_id=parent_id, context_ref=context_ref,
            capabilities=capabilities, finalize=scope == "terminal" if finalize is None else finalize,
            meta=meta, open_call=open_call, what=what,
        )  # fmt: skip
        if not core.pathways_wanted:
            await core.want_pathways()
        if trace_id is not None:
            core.refuse_second_originator(trace_id)
        return task

    async def dispatch_and_subscribe(
        self,
        *,
        neuron: str | None = None,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        scope: PathwayScope = "all",
        **kw: Any,
    ) -> Pathway:
        """``dispatch`` under its reactive name: wire ``@pw.on(...)`` on the returned Pathway."""
        return await self.dispatch(neuron=neuron, input=input, capabilities=capabilities, scope=scope, **kw)

    async def dispatch_and_wait(
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
        """Dispatch, wait for the first reply (or terminal, with scope="terminal"), close, return it.

        With ``retry=`` the same arc runs under ``run_with_retry``.  A call that gives
        up (no reply within *timeout_s*, or the caller cancelled) STOPs its trace.
        """
        if retry is not None:
            return await self.run_with_retry(
                retry=retry, neuron=neuron, input=input, capabilities=capabilities, timeout_s=timeout_s,
                scope=scope, finalize=finalize, **kw,
            )  # fmt: skip
        return await self._request_reply(
            neuron, input, capabilities, timeout_s, scope, finalize, kw, self._abandon
        )

    async def _abandon(self, trace_id: str, reason: str) -> None:
        await self._stops.abandon(trace_id, reason)

    async def _dispatch_and_wait_giving_up(
        self,
        give_up: GiveUp,
        *,
        neuron: str | None = None,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        timeout_s: float | None = 30.0,
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        **kw: Any,
    ) -> Signal:
        """``dispatch_and_wait`` (no retry) whose trace, when the call gives up, goes to *give_up*.

        The sync facade's: its STOP also waits for the first STOPPED (``stop_ack_timeout_s``).
        """
        return await self._request_reply(neuron, input, capabilities, timeout_s, scope, finalize, kw, give_up)

    def _request_reply(
        self,
        neuron: str | None,
        input: dict[str, Any],
        capabilities: list[str] | None,
        timeout_s: float | None,
        scope: PathwayScope,
        finalize: bool | None,
        kw: dict[str, Any],
        give_up: GiveUp | None,
    ) -> Awaitable[Signal]:
        """The one dispatch → wait → close path (plain calls and every retry attempt).

        With OpenTelemetry off it hands back ``_await_reply``'s own coroutine: not even a
        no-op span, and no frame of its own on this path.
        """
        reply = self._await_reply(neuron, input, capabilities, timeout_s, scope, finalize, kw, give_up)
        if _TEL.impl is None:
            return reply
        return _traced_reply(reply, neuron, capabilities, kw.get("meta"))

    async def _await_reply(
        self,
        neuron: str | None,
        input: dict[str, Any],
        capabilities: list[str] | None,
        timeout_s: float | None,
        scope: PathwayScope,
        finalize: bool | None,
        kw: dict[str, Any],
        give_up: GiveUp | None,
    ) -> Signal:
        """Publish the TASK and wait for the reply, both within *timeout_s*.

        *timeout_s* bounds the TASK's publish too (an outage costs the caller its
        deadline, not the bus's publish timeout).  When the call gives up — no reply in
        time, or the caller is cancelled — the trace is handed to *give_up* (a plain
        call STOPs it; a retry attempt leaves that to the loop).
        """
        core = self._core
        task = await self._originating_task(neuron, input, capabilities, scope, finalize, **kw)
        trace = task.trace_id
        # Most often the bus takes the TASK at once: then its Pathway opens after the write,
        # while the TASK travels.  Nothing can reach that Pathway sooner: a TASK is no Pathway
        # type, and no other Signal is filed before this task next waits.
        sent = timeout_s is not None and core.publish_nowait(task)
        pw = self._open_originator(task, scope)
        gave_up: str | None = None  # why the call gives up on its trace, if it does
        try:
            wait_s = timeout_s
            if timeout_s is None:
                await core.publish(task)
            elif not sent:  # the bus would make us wait: within the deadline
                deadline = anyio.current_time() + timeout_s
                if not await core.publish_by(task, deadline):
                    gave_up = "dispatch_and_wait timed out"
                    raise DispatchTimeout(
                        f"TASK {task.id} for {describe_target(neuron, capabilities)} was not published "
                        f"within {timeout_s} s: the bus did not take it (disconnected, or its buffers are "
                        f"full); trace {trace}"
                    )
                wait_s = deadline - anyio.current_time()
            try:
                return await pw._take(WAIT_TYPES, wait_s, "a reply")  # Pathway.wait, one frame less
            except PathwayTimeout:
                gave_up = "dispatch_and_wait timed out"
        except anyio.get_cancelled_exc_class():
            gave_up = "the caller gave up on dispatch_and_wait"
            raise
        finally:
            pw._close_now()
            if gave_up is not None and give_up is not None:
                await give_up(trace, gave_up)
        # no reply in time (the trace is STOPped already): say why, if it is that nobody is there
        why = await self._registry.explain_unanswered(neuron, capabilities)
        raise DispatchTimeout(
            f"no reply from {describe_target(neuron, capabilities)} within {timeout_s} s "
            f"(trace {trace}, TASK {task.id})" + (f": {why}" if why else "")
        )

    async def run_with_retry(
        self,
        *,
        retry: RetryStrategy,
        neuron: str | None = None,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        timeout_s: float | None = 30.0,
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        **kw: Any,
    ) -> Signal:
        """Dispatch and wait, retrying per *retry* (see ``RetryStrategy``)."""
        require_strategy(retry)
        self._core.require_orchestrator("run_with_retry()")
        self._core.require_running("run_with_retry()")
        wait_s = retry.timeout_s if retry.timeout_s is not None else timeout_s
        trace_id: str | None = kw.pop("trace_id", None)
        meta: dict[str, Any] | None = kw.pop("meta", None)

        async def attempt(trace: str, attempt_meta: dict[str, Any]) -> Signal:
            call = {**kw, "trace_id": trace, "meta": attempt_meta}
            return await self._request_reply(neuron, input, capabilities, wait_s, scope, finalize, call, None)

        async def stop(trace: str, rollback: bool, reason: str) -> None:
            await self._stops.abandon(trace, reason, rollback=rollback)

        with retrying(neuron, capabilities, retry.max_attempts):  # OpenTelemetry: one span over the attempts
            return await retry_loop(retry, attempt, stop, trace_id=trace_id, meta=meta)

    # ------------------------------------------------------------------ STOP
    def is_stopped(self, trace_id: str) -> bool:
        """True when this Dendrite saw (or sent) a STOP for *trace_id* and still remembers it."""
        return self._stops.is_stopped(trace_id)

    def cancel_trace(self, trace_id: str) -> int:
        """Cancel every TASK of *trace_id* running here; returns how many were cancelled."""
        return self._core.cancel_trace(trace_id)

    async def emit_stop(self, *, trace_id: str, rollback: bool = False, reason: str | None = None) -> Signal:
        """Broadcast STOP for a whole trace (orchestrators only); returns the STOP Signal.

        Best effort and idempotent: a second STOP cancels nothing new and
        compensates nothing twice.  ``rollback=True`` asks every Engram host to
        undo the trace's journaled writes.
        """
        return await self._stops.emit_stop(trace_id, rollback, reason)

    async def stop_trace(
        self,
        trace_id: str,
        *,
        rollback: bool = False,
        reason: str | None = None,
        collect_acks: bool = False,
        timeout_s: float = 1.0,
    ) -> list[Signal]:
        """STOP *trace_id*; with ``collect_acks`` return the STOPPED acks seen within *timeout_s*."""
        if not collect_acks:
            await self.emit_stop(trace_id=trace_id, rollback=rollback, reason=reason)
            return []
        return await self._stops.stop_and_collect(trace_id, rollback, reason, timeout_s, first_only=False)

    async def stop_and_confirm(
        self, trace_id: str, *, rollback: bool = False, reason: str | None = None, timeout_s: float = 1.0
    ) -> Signal | None:
        """STOP *trace_id* and wait for the first STOPPED: a node with a stake in it has quiesced.

        Returns the first ack from a Dendrite that ran the trace's work (this one's
        own when it cancelled a TASK here); this one's ack for a mere open Pathway or
        Engram only when no other came within *timeout_s*; None when none came at
        all (nobody ran the trace, or its host is gone).  What the sync facade does
        when a call times out.
        """
        acks = await self._stops.stop_and_collect(trace_id, rollback, reason, timeout_s, first_only=True)
        return acks[0] if acks else None

    # ------------------------------------------------------------------ bidding
    async def dispatch_offer(
        self,
        *,
        input: dict[str, Any],
        capabilities: list[str] | None = None,
        deadline_ms: int = 250,
        select: str = "first_bid",
        scope: PathwayScope = "all",
        finalize: bool | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        context_ref: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Pathway:
        """Offer work, award it to the best bid within *deadline_ms*; returns the trace's Pathway.

        ``first_bid`` awards at the first BID; ``lowest_cost`` and
        ``highest_confidence`` wait the whole window.  Raises ``BiddingTimeout``
        when nobody bids in time.
        """
        return await self._bidding.dispatch_offer(
            input=input, capabilities=capabilities, deadline_ms=deadline_ms, select=select, scope=scope,
            finalize=finalize, trace_id=trace_id, parent_id=parent_id, context_ref=context_ref, meta=meta,
        )  # fmt: skip

    async def bid(
        self,
        offer: Signal,
        *,
        neuron: str,
        cost: float,
        eta_ms: int | None = None,
        confidence: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Answer *offer* with a BID for *neuron* (any role may bid); returns the BID."""
        return await self._bidding.bid(
            offer, neuron=neuron, cost=cost, eta_ms=eta_ms, confidence=confidence, meta=meta
        )

    # ------------------------------------------------------------------ human in the loop
    async def await_decision(self, request: Signal, *, timeout_s: float | None = 30.0) -> Signal:
        """The CLARIFICATION_ANSWER / PERMISSION_DECISION whose parent is *request*.

        Raises ``DecisionTimeout`` after *timeout_s*, ``OpCancelled`` if the trace
        ends or is STOPped first.
        """
        return await self._decisions.await_decision(request, timeout_s=timeout_s)

    async def answer_clarification(
        self, request: Signal, *, answer: Any, meta: dict[str, Any] | None = None
    ) -> Signal:
        """Publish CLARIFICATION_ANSWER for *request* (any role); returns it."""
        return await self._decisions.answer_clarification(request, answer=answer, meta=meta)

    async def grant_permission(
        self,
        request: Signal,
        *,
        reason: str | None = None,
        ttl_ms: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Publish PERMISSION_DECISION ``granted: true`` for *request* (any role)."""
        return await self._decisions.grant_permission(request, reason=reason, ttl_ms=ttl_ms, meta=meta)

    async def deny_permission(
        self, request: Signal, *, reason: str | None = None, meta: dict[str, Any] | None = None
    ) -> Signal:
        """Publish PERMISSION_DECISION ``granted: false`` for *request* (any role)."""
        return await self._decisions.deny_permission(request, reason=reason, meta=meta)

    async def respond_to_clarification(
        self,
        request: Signal,
        *,
        answer: Any,
        neuron: str | None = None,
        extra: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Re-dispatch the question and *answer* to the asking neuron (orchestrators); returns the TASK."""
        return await self._decisions.respond_to_clarification(
            request, answer=answer, neuron=neuron, extra=extra, meta=meta
        )

    async def respond_to_permission(
        self,
        request: Signal,
        *,
        granted: bool,
        reason: str | None = None,
        ttl_ms: int | None = None,
        neuron: str | None = None,
        extra: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Re-dispatch to the asking neuron with the verdict (orchestrators); returns the TASK."""
        return await self._decisions.respond_to_permission(
            request, granted=granted, reason=reason, ttl_ms=ttl_ms, neuron=neuron, extra=extra, meta=meta
        )

    async def respond_to_escalation(
        self,
        escalation: Signal,
        *,
        neuron: str | None = None,
        input: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """Answer an ESCALATION with a TASK on its trace (orchestrators); returns the TASK.

        Sent to *neuron*, else ``payload.target``, else back to the escalating neuron;
        *input* replaces the default ``{"escalation": {reason, context, from}}``.
        """
        return await self._decisions.respond_to_escalation(escalation, neuron=neuron, input=input, meta=meta)

    # ------------------------------------------------------------------ Engram
    def attach_engram(self, engram: Engram) -> None:
        """Host *engram*: serve RECALL/IMPRINT for it and announce it (at once if running).

        The Dendrite does not close the engram; its owner does.
        """
        self._engrams.attach(engram)

    async def detach_engram(self, engram_id: str) -> None:
        """Stop hosting *engram_id* (engrams never DEREGISTER, §7.1)."""
        self._engrams.detach(engram_id)

    async def recall(
        self,
        *,
        engram_id: str | None = None,
        engram_kind: str | None = None,
        query: dict[str, Any],
        filters: dict[str, Any] | None = None,
        context_ref: str | None = None,
        deadline_ms: int | None = None,
        recall_mode: str = "first",
        min_confidence: float | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RecallResult:
        """Ask engrams for entries matching *query*.

        ``first`` returns the first answer; ``merge``/``all`` collect answers until
        the deadline and sort the hits by score.  Raises ``EngramTimeout`` when no
        engram answered in time, ``EngramError`` when every answer was an error.
        """
        return await self._engrams.recall(
            engram_id=engram_id, engram_kind=engram_kind, query=query, filters=filters,
            context_ref=context_ref, deadline_ms=deadline_ms, recall_mode=recall_mode,
            min_confidence=min_confidence, trace_id=trace_id, parent_id=parent_id, meta=meta,
        )  # fmt: skip

    async def imprint(
        self,
        *,
        engram_id: str | None = None,
        engram_kind: str | None = None,
        op: str,
        entry: dict[str, Any],
        merge_key: str | None = None,
        await_ack: bool = False,
        deadline_ms: int | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ImprintReceipt | None:
        """Write to engrams.  Returns None at once, or with ``await_ack`` the first receipt.

        The IMPRINT's id is its idempotency key: a redelivered IMPRINT writes nothing.
        Writes are journaled under the trace, so ``stop_trace(trace, rollback=True)``
        undoes them; a write for a STOPped trace is refused.
        """
        return await self._engrams.imprint(
            engram_id=engram_id, engram_kind=engram_kind, op=op, entry=entry, merge_key=merge_key,
            await_ack=await_ack, deadline_ms=deadline_ms, trace_id=trace_id, parent_id=parent_id,
            meta=meta,
        )  # fmt: skip

    # ------------------------------------------------------------------ registry
    async def registry_snapshot(
        self,
        *,
        capability: str | None = None,
        include_deregistered: bool = False,
        max_age_s: float | None = None,
    ) -> list[NeuronRecord]:
        """The registry now, sorted by neuron id; *max_age_s* keeps those heard from recently."""
        return await self._registry.registry_snapshot(
            capability=capability, include_deregistered=include_deregistered, max_age_s=max_age_s
        )

    async def find_neurons(
        self, *, capability: str | None = None, max_age_s: float | None = None
    ) -> list[NeuronRecord]:
        """Live (not deregistered) neurons, optionally only those advertising *capability*."""
        return await self._registry.registry_snapshot(capability=capability, max_age_s=max_age_s)

    async def sweep_registry(self) -> list[str]:
        """Mark neurons not heard from within ``stale_after_s`` deregistered now; returns their ids."""
        return await self._registry.sweep_registry()
