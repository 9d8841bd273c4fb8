"""``Dendrite``: the only thing that touches the Synapse (seed 004).

It hosts Axons, announces them, runs inbound TASKs, and offers the
orchestration API.  Structured concurrency is the point:

* one task group per running Dendrite, opened by ``start()``/``__aenter__``
  and closed by ``stop()``/``__aexit__``; every inbound TASK, handler call,
  heartbeat and schedule runs in it, so nothing of ours outlives the block;
* each inbound TASK runs in its own cancel scope filed under its trace id
  (``_trace_scopes``) — STOP cancels exactly those;
* concurrent TASKs and concurrent handler calls are bounded by semaphores that
  the router acquires *before* starting work, so a flood slows the bus
  (backpressure) instead of piling up tasks;
* the router runs on the synapse's delivery path and never runs user code or
  publishes there: it files Signals into Pathways and starts tasks.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .axon import Axon
from .bidding import BiddingMixin, BidLedger
from .context import NeuronContext
from .deadlines import Deadlines
from .decisions import DecisionCache, DecisionsMixin
from .emitters import CognitionEmitters
from .engram.client import DEFAULT_ENGRAM_DEADLINE_MS, EngramMixin
from .engram.host import EngramHost
from .errors import DendriteProtocolError, DispatchTimeout, PathwayBusyError, PathwayTimeout
from .handlers import HandlerDecorators, HandlerFn, HandlerRegistry, HandlerSpec
from .ids import new_trace_id
from .lifecycle import HookFn, LifecycleHooks
from .ops import OpTable
from .pathway import DEFAULT_PATHWAY_BUFFER, Pathway, PathwayScope
from .registry.mirror import RegistryMixin
from .retry import RetryMixin, RetryStrategy
from .runners import RunnerPool
from .signal import PATHWAY_TYPES, ROLE_GATED_TYPES, SYNAPSE_TYPES, Directed, Signal, SignalType
from .stops import StopMixin, StopTombstones
from .subjects import signal_subject, subject_for
from .synapse.base import Subscription, Synapse

__all__ = ["Dendrite", "current_task"]

log = logging.getLogger("cosmonapse.dendrite")

T = SignalType
_ROLES = ("orchestrator", "worker")

#: The TASK being run by the current task (the ambient parent of dispatches made from a Neuron).
current_task: contextvars.ContextVar[Signal | None] = contextvars.ContextVar(
    "cosmonapse_current_task", default=None
)


class Dendrite(
    CognitionEmitters,
    HandlerDecorators,
    LifecycleHooks,
    StopMixin,
    RetryMixin,
    EngramMixin,
    BiddingMixin,
    DecisionsMixin,
    RegistryMixin,
):
    """Hosts Axons and exposes every orchestration primitive."""

    def __init__(
        self,
        *,
        synapse: Synapse,
        registry_store: Any | None = None,
        namespace: str = "default",
        dendrite_id: str = "dendrite",
        heartbeat_s: float = 30.0,
        reregister_on_heartbeat: bool = True,
        role: str = "orchestrator",
        auto_bid: bool = True,
        stale_after_s: float | None = None,
        max_concurrent_tasks: int = 64,
        max_concurrent_handlers: int = 256,
        pathway_buffer: int = DEFAULT_PATHWAY_BUFFER,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        LifecycleHooks.__init__(self)
        if role not in _ROLES:
            raise ValueError(f"role must be 'orchestrator' or 'worker', not {role!r}")
        if not namespace or any(c in namespace for c in ".*> \t"):
            raise ValueError(f"namespace must be one subject token (no '.', '*', '>', spaces): {namespace!r}")
        if max_concurrent_tasks < 1 or max_concurrent_handlers < 1:
            raise ValueError("concurrency limits must be >= 1")
        self.synapse = synapse
        self.registry_store = registry_store
        self.namespace = namespace
        self.dendrite_id = dendrite_id
        self.heartbeat_s = heartbeat_s
        self.reregister_on_heartbeat = reregister_on_heartbeat
        self._role = role
        self.auto_bid = auto_bid
        self.stale_after_s = stale_after_s
        self.max_concurrent_tasks = max_concurrent_tasks
        self.max_concurrent_handlers = max_concurrent_handlers
        self.pathway_buffer = pathway_buffer
        self.shutdown_timeout_s = shutdown_timeout_s

        self._axons: dict[str, Axon] = {}
        self._handlers = HandlerRegistry()
        self._subs: dict[tuple[str, str | None], Subscription] = {}
        self._raw_subs: list[Subscription] = []
        self._pathways: dict[str, list[Pathway]] = {}
        self._trace_scopes: dict[str, set[anyio.CancelScope]] = {}
        self._stops = StopTombstones()  # traces seen STOPped: their work never starts again
        self._ops = OpTable()  # request/reply ops by request id (recall, imprint, decisions, acks)
        self._engram_host = EngramHost(self.is_stopped)
        self._bids = BidLedger()  # bids we placed, so only the winning host runs an award
        self._decisions = DecisionCache()  # recent CLARIFICATION_ANSWER / PERMISSION_DECISION by parent
        self._presence_send: Any = None  # the registry mirror's queue, while running with a store
        #: Deadline of recall / acknowledged imprint calls that give none.
        self.engram_deadline_ms: int = DEFAULT_ENGRAM_DEADLINE_MS
        self._peer_caps: dict[str, tuple[str, ...]] = {}
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._running = False
        self._deadlines: Deadlines | None = None
        self._task_pool: RunnerPool | None = None
        self._handler_pool: RunnerPool | None = None
        self._pathway_subs_ready = False
        self._routed_group: str | None = None
        # An orchestrator reads the whole namespace through one subscription, so
        # every Signal of a trace reaches its Pathway in the order it was published
        # (per-type subscriptions are separate pumps and would interleave freely).
        # Workers subscribe to exact subjects only.
        self._single_feed = role == "orchestrator"
        # The feed is every type but TASK: an orchestrator does not get its own TASKs back.
        self._feed_subjects = frozenset(
            subject_for(namespace, t) for t in SignalType if t is not SignalType.TASK
        )
        self._subject_cache: dict[SignalType, str] = {}

    # ------------------------------------------------------------------ info
    @property
    def role(self) -> str:
        return self._role

    @property
    def capabilities(self) -> list[str]:
        """Every attached Axon's capabilities, sorted and de-duplicated."""
        return sorted({c for a in self._axons.values() for c in a.capabilities})

    @property
    def running(self) -> bool:
        return self._running

    @property
    def axons(self) -> dict[str, Axon]:
        return dict(self._axons)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        axons = list(self._axons)
        return f"<Dendrite {self.dendrite_id!r} ns={self.namespace!r} {self._role} {state} axons={axons}>"

    # ------------------------------------------------------------- life cycle
    async def start(self) -> None:
        """Subscribe, REGISTER every Axon, start heartbeats and schedules."""
        if self._running:
            raise DendriteProtocolError(f"Dendrite {self.dendrite_id!r} is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._deadlines = Deadlines()
            self._tg.start_soon(self._deadlines.run, name=f"deadlines:{self.dendrite_id}")
            self._task_pool = RunnerPool(self._tg, self.max_concurrent_tasks, name="task")
            self._handler_pool = RunnerPool(self._tg, self.max_concurrent_handlers, name="handler")
            self._stack = stack
            self._running = True
            self._start_registry()
            for axon in list(self._axons.values()):
                await axon.serve_neuron(self._tg)
            await self._subscribe_all()
            for axon in list(self._axons.values()):
                await self._publish(axon.register_signal())
            for engram in list(self._engram_host.engrams.values()):
                await self._publish(engram.register_signal())
            await self._announce_to_registry()
            self._tg.start_soon(self._heartbeat_loop, name=f"heartbeat:{self.dendrite_id}")
            for every_s, fn in self._schedules:
                self._tg.start_soon(self._schedule_loop, every_s, fn, name=f"schedule:{fn!r}")
            self.synapse.add_reconnect_callback(self._on_reconnected)
            for hook in self._connect_hooks:
                self._tg.start_soon(self._run_hook, hook)
        except BaseException:
            self._running = False
            self._tg = None
            self._stack = None
            await stack.aclose()
            raise

    async def stop(self, reason: str | None = None) -> None:
        """Cancel in-flight work, DEREGISTER every Axon, unsubscribe; idempotent.

        The Synapse (and registry store) are not closed: the caller owns them.
        """
        stack, tg = self._stack, self._tg
        if stack is None or tg is None:
            return
        self._running = False
        self.synapse.remove_reconnect_callback(self._on_reconnected)
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_timeout_s):
                await self._unsubscribe_all()
        finally:
            # Refuse new jobs (a router blocked handing one over is released), cancel
            # every child (Neurons mid-flight see cancellation and run their finally
            # blocks) and wait for them before announcing we are gone.
            for pool in (self._task_pool, self._handler_pool):
                if pool is not None:
                    pool.close()
            self._ops.fail_all(f"Dendrite {self.dendrite_id!r} stopped")
            tg.cancel_scope.cancel()
            try:
                await stack.aclose()
            finally:
                self._tg = None
                self._stack = None
                self._deadlines = None
                self._trace_scopes.clear()
                for pathways in list(self._pathways.values()):
                    for pw in list(pathways):
                        pw._close_now()
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_timeout_s):
                    for axon in list(self._axons.values()):
                        await self._publish_deregister(axon, reason)
                    await self._registry_stopped()
                    for axon in list(self._axons.values()):
                        await axon.aclose()

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

    # ------------------------------------------------------------ Axons
    def attach_axon(self, axon: Axon) -> None:
        """Host *axon*.  On a running Dendrite use ``add_axon`` (it announces at once)."""
        if axon.neuron_id in self._axons:
            raise DendriteProtocolError(f"an Axon with neuron_id {axon.neuron_id!r} is already attached")
        self._axons[axon.neuron_id] = axon

    async def add_axon(self, axon: Axon) -> None:
        """Attach *axon* while running: subscribe as needed and REGISTER it now."""
        self.attach_axon(axon)
        if self._running and self._tg is not None:
            await axon.serve_neuron(self._tg)
            await self._subscribe_axon_subjects()
            await self._publish(axon.register_signal())
            self._fire_refresh()

    async def detach_axon(self, neuron_id: str, *, reason: str | None = None) -> None:
        """Stop hosting *neuron_id* and DEREGISTER it."""
        axon = self._axons.pop(neuron_id, None)
        if axon is None:
            raise DendriteProtocolError(f"no Axon {neuron_id!r} is attached")
        if self._running:
            await self._subscribe_axon_subjects()
            await self._publish_deregister(axon, reason)
            self._fire_refresh()
        await axon.aclose()

    async def _publish_deregister(self, axon: Axon, reason: str | None) -> None:
        payload: dict[str, Any] = {}
        if reason:
            payload["reason"] = reason
        sig = Signal(type=T.DEREGISTER, directed=Directed(axon.neuron_id), payload=payload)
        try:
            await self._publish(sig)
        except Exception:
            log.warning("could not publish DEREGISTER for %s", axon.neuron_id, exc_info=True)

    # ------------------------------------------------------------ subscriptions
    def _routed_group_name(self) -> str | None:
        caps = self.capabilities
        return "caps:" + ",".join(caps) if caps else None

    async def _ensure_sub(
        self, subject: str, handler: Callable[[Signal], Awaitable[None]], group: str | None = None
    ) -> None:
        key = (subject, group)
        if key in self._subs or not self._running:
            return
        if self._single_feed and group is None and subject in self._feed_subjects:
            return  # the namespace feed already delivers it
        self._subs[key] = await self.synapse.subscribe(subject, handler, queue_group=group)

    async def _drop_sub(self, subject: str, group: str | None) -> None:
        sub = self._subs.pop((subject, group), None)
        if sub is not None:
            await self.synapse.unsubscribe(sub)

    def _subject(self, signal_type: SignalType, *, routed: bool = False) -> str:
        return subject_for(self.namespace, signal_type, routed=routed)

    async def _subscribe_all(self) -> None:
        if self._single_feed:
            # One subscription over every type but TASK: one pump, so the Signals of a
            # trace reach its Pathway in the order they were published.
            feed = sorted(self._feed_subjects)
            self._subs[("feed", None)] = await self.synapse.subscribe(feed, self._route)
            self._pathway_subs_ready = True
        await self._ensure_sub(self._subject(T.STOP), self._route)
        await self._subscribe_axon_subjects()
        await self._subscribe_engram_subjects()
        await self._subscribe_registry()
        for t in self._handlers.types():
            await self._subscribe_type(t)
        if self._handlers.uses_capability_filter():
            await self._subscribe_presence()
        if self._handlers.has_trace_handlers():
            await self._subscribe_whole_traces()

    async def _subscribe_whole_traces(self) -> None:
        """``on_trace`` handlers see every type of their trace, TASKs included."""
        await self._ensure_pathway_subscriptions()
        await self._subscribe_type(T.TASK)

    async def _subscribe_axon_subjects(self) -> None:
        if not self._running:
            return
        if self._axons:
            await self._ensure_sub(self._subject(T.TASK), self._route)
            await self._ensure_sub(self._subject(T.TASK_AWARDED), self._route)
            await self._ensure_sub(self._subject(T.DISCOVER), self._route)
            await self._subscribe_bidding()
        group = self._routed_group_name()
        if group != self._routed_group:
            routed = self._subject(T.TASK, routed=True)
            if self._routed_group is not None:
                await self._drop_sub(routed, self._routed_group)
            self._routed_group = group
            if group is not None:
                await self._ensure_sub(routed, self._route_routed_task, group)

    async def _subscribe_type(self, signal_type: SignalType) -> None:
        await self._ensure_sub(self._subject(signal_type), self._route)
        if signal_type is T.TASK:
            # handlers see capability-routed TASKs too (a plain copy, not the group's)
            await self._ensure_sub(self._subject(T.TASK, routed=True), self._route)

    async def _subscribe_presence(self) -> None:
        for t in (T.REGISTER, T.DEREGISTER):
            await self._ensure_sub(self._subject(t), self._route)

    async def _ensure_pathway_subscriptions(self) -> None:
        if self._pathway_subs_ready:
            return
        for t in PATHWAY_TYPES:
            await self._ensure_sub(self._subject(t), self._route)
        self._pathway_subs_ready = True

    async def _unsubscribe_all(self) -> None:
        subs = list(self._subs.values()) + self._raw_subs
        self._subs.clear()
        self._raw_subs.clear()
        self._pathway_subs_ready = False
        self._routed_group = None
        for sub in subs:
            try:
                await self.synapse.unsubscribe(sub)
            except Exception:
                log.warning("unsubscribe of %s failed", sub.subject, exc_info=True)

    def _add_handler(self, spec: HandlerSpec) -> None:
        self._handlers.add(spec)
        if self._running and self._tg is not None:
            self._tg.start_soon(self._subscribe_for_spec, spec)

    async def _subscribe_for_spec(self, spec: HandlerSpec) -> None:
        if spec.types is None:
            await self._subscribe_whole_traces()
            return
        for t in spec.types:
            await self._subscribe_type(t)
        if spec.capability:
            await self._subscribe_presence()

    async def subscribe(
        self, signal_type: SignalType, handler: HandlerFn, *, queue_group: str | None = None
    ) -> Subscription:
        """A raw subscription to one type; *handler* runs as a bounded child task per Signal."""
        if not self._running:
            raise DendriteProtocolError("subscribe() needs a running Dendrite (inside `async with`)")

        async def forward(sig: Signal) -> None:
            await self._spawn_handler(handler, sig)

        sub = await self.synapse.subscribe(self._subject(signal_type), forward, queue_group=queue_group)
        self._raw_subs.append(sub)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """Undo ``subscribe()``."""
        if sub in self._raw_subs:
            self._raw_subs.remove(sub)
        await self.synapse.unsubscribe(sub)

    def _on_reconnected(self) -> None:
        if self._running and self._tg is not None:
            self._tg.start_soon(self._reannounce, name="reannounce")

    async def _reannounce(self) -> None:
        for axon in list(self._axons.values()):
            await self._publish(axon.register_signal())
        for hook in self._connect_hooks:
            self._tg_start(self._run_hook, hook)

    # ------------------------------------------------------------ routing
    async def _route(self, sig: Signal) -> None:
        """Runs on the synapse's pump: file the Signal, start work; never run user code here."""
        if not self._running:
            return
        stype = sig.type
        if stype in PATHWAY_TYPES:
            if self._ops and sig.parent_id is not None:
                self._ops.deliver(sig)  # a reply to a request of ours (recall, decision, ack...)
            pathways = self._pathways.get(sig.trace_id)
            if pathways:
                for pw in list(pathways):
                    await pw._deliver(sig)
        if stype is T.TASK:
            if not self._is_routed_task(sig) and sig.trace_id not in self._stops:
                axon = self._select_axon(sig)
                if axon is not None:
                    await self._start_task(axon, sig)
        elif stype is T.STOP:
            await self._on_stop(sig)
        elif stype is T.RECALL or stype is T.IMPRINT:
            if self._engram_host:
                await self._start_internal(self._serve_engram_request, sig)
        elif stype is T.FINAL or stype is T.ERROR:
            if self._ops:
                self._ops.fail_trace(sig.trace_id, "ended")  # outstanding recall/imprint/decision ops
            if stype is T.FINAL and self._engram_host:
                self._engram_host.decide(sig.trace_id, rollback=False)  # FINAL commits the saga
                await self._start_internal(self._commit_engrams, sig)
        elif stype is T.CLARIFICATION_ANSWER or stype is T.PERMISSION_DECISION:
            self._decisions.put(sig)  # so a late await_decision still resolves
        elif stype is T.TASK_OFFER:
            await self._on_task_offer(sig)  # the auto-bidder
        elif stype is T.TASK_AWARDED:
            await self._on_task_awarded(sig)
        elif stype is T.DISCOVER and self._axons and not self._handlers.has(T.DISCOVER):
            await self._start_internal(self._answer_discover, sig)
        elif stype is T.REGISTER:
            self._learn_peer(sig)
            if self._presence_send is not None:
                await self._mirror_presence(sig)
        elif stype is T.DEREGISTER and sig.directed is not None and sig.directed.id:
            self._peer_caps.pop(sig.directed.id, None)
            if self._presence_send is not None:
                await self._mirror_presence(sig)
        elif stype is T.HEARTBEAT and self._presence_send is not None:
            await self._mirror_presence(sig)
        for spec in self._handlers.matching(sig, self._has_capability):
            await self._spawn_handler(spec.fn, sig)

    async def _route_routed_task(self, sig: Signal) -> None:
        """The queue-group copy of a capability-routed TASK: run it if an Axon can."""
        if not self._running or sig.type is not T.TASK or sig.trace_id in self._stops:
            return
        axon = self._select_axon(sig)
        if axon is not None:
            await self._start_task(axon, sig)

    @staticmethod
    def _is_routed_task(sig: Signal) -> bool:
        return (sig.directed is None or not sig.directed.id) and bool(sig.payload.get("capabilities"))

    def _select_axon(self, task: Signal) -> Axon | None:
        """Addressed → that id; routed → first Axon with every capability; open call → catch_all."""
        target = task.directed.id if task.directed is not None else None
        if target:
            return self._axons.get(target)
        caps = task.payload.get("capabilities")
        if caps:
            for axon in self._axons.values():
                if axon.serves(caps):
                    return axon
            return None
        for axon in self._axons.values():
            if axon.catch_all:
                return axon
        return None

    def _learn_peer(self, sig: Signal) -> None:
        if sig.directed is not None and sig.directed.id:
            caps = sig.payload.get("capabilities")
            if isinstance(caps, list):
                self._peer_caps[sig.directed.id] = tuple(str(c) for c in caps)

    def _has_capability(self, sig: Signal, capability: str) -> bool:
        if sig.type in (T.TASK_OFFER, T.TASK):
            caps = sig.payload.get("capabilities") or []
            return capability in caps or (sig.type is T.TASK_OFFER and not caps)
        neuron = sig.directed.id if sig.directed is not None else None
        if not neuron:
            return False
        axon = self._axons.get(neuron)
        if axon is not None:
            return capability in axon.capabilities
        return capability in self._peer_caps.get(neuron, ())

    # ------------------------------------------------------------ running work
    def _tg_start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        tg = self._tg
        if tg is None or not self._running:
            return False
        try:
            tg.start_soon(fn, *args)
        except RuntimeError:  # the task group is closing
            return False
        return True

    async def _start_task(self, axon: Axon, task: Signal) -> None:
        pool = self._task_pool
        if pool is not None and self._running:
            try:
                await pool.submit(self._run_task, axon, task)
            except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # stopping: the TASK is dropped like any TASK that arrives after stop

    async def _run_task(self, axon: Axon, task: Signal) -> None:
        trace = task.trace_id
        if trace in self._stops:
            return  # STOPped while it waited for a runner
        with anyio.CancelScope() as scope:
            scopes = self._trace_scopes.setdefault(trace, set())
            scopes.add(scope)
            token = current_task.set(task)
            try:
                ctx = NeuronContext(
                    task,
                    axon.neuron_id,
                    publish=self._publish,
                    entries=await axon.fetch_context(task),
                    dendrite_id=self.dendrite_id,
                    dendrite=self,
                )
                for reply in await axon.run(task, ctx):
                    await self._publish(reply)
            finally:
                current_task.reset(token)
                scopes.discard(scope)
                if not scopes and self._trace_scopes.get(trace) is scopes:
                    del self._trace_scopes[trace]
        if scope.cancelled_caught:
            log.debug("TASK %s on trace %s was cancelled", task.id, trace)

    async def _spawn_handler(self, fn: HandlerFn, sig: Signal) -> None:
        pool = self._handler_pool
        if pool is not None and self._running:
            try:
                await pool.submit(self._run_handler, fn, sig)
            except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # stopping

    async def _run_handler(self, fn: HandlerFn, sig: Signal) -> None:
        try:
            result = fn(sig)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("handler %r raised on %s %s", fn, sig.type.value, sig.id)

    async def _start_internal(self, fn: Callable[[Signal], Awaitable[Any]], sig: Signal) -> None:
        await self._spawn_handler(fn, sig)

    async def _run_hook(self, hook: HookFn) -> None:
        try:
            result = hook()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("lifecycle hook %r raised", hook)

    def _fire_refresh(self) -> None:
        for hook in self._refresh_hooks:
            self._tg_start(self._run_hook, hook)

    async def _heartbeat_loop(self) -> None:
        if self.heartbeat_s <= 0:
            return
        while True:
            await anyio.sleep(self.heartbeat_s)
            if not self._axons:
                continue
            for axon in list(self._axons.values()):
                try:
                    if self.reregister_on_heartbeat:
                        await self._publish(axon.register_signal())
                    await self._publish(
                        Signal(type=T.HEARTBEAT, directed=Directed(axon.neuron_id), payload={"status": "ok"})
                    )
                except Exception:
                    log.warning("heartbeat for %s failed", axon.neuron_id, exc_info=True)
            self._fire_refresh()

    async def _schedule_loop(self, every_s: float, fn: HookFn) -> None:
        while True:
            await anyio.sleep(every_s)
            await self._run_hook(fn)

    def _schedule_added(self, every_s: float, fn: HookFn) -> None:
        self._tg_start(self._schedule_loop, every_s, fn)

    async def _answer_discover(self, sig: Signal) -> None:
        want_neuron = sig.payload.get("neuron")
        want_caps = sig.payload.get("capabilities") or []
        matches = [
            a
            for a in self._axons.values()
            if (not want_neuron or a.neuron_id == want_neuron) and a.serves(want_caps)
        ]
        if not matches:
            return
        await anyio.sleep(random.uniform(0, 0.1))  # spread the answers of many hosts
        for axon in matches:
            await self._publish(axon.register_signal())

    # ------------------------------------------------------------ STOP
    def cancel_trace(self, trace_id: str) -> int:
        """Cancel every TASK of *trace_id* running here; returns how many were cancelled."""
        scopes = self._trace_scopes.pop(trace_id, None)
        if not scopes:
            return 0
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    # ------------------------------------------------------------ publishing
    async def _publish(self, sig: Signal) -> None:
        subject = self._subject_cache.get(sig.type)
        if subject is None or sig.type is T.TASK:
            subject = signal_subject(self.namespace, sig)
            if sig.type is not T.TASK:
                self._subject_cache[sig.type] = subject
        await self.synapse.publish(subject, sig)

    def _require_orchestrator(self, what: str) -> None:
        if self._role != "orchestrator":
            raise DendriteProtocolError(
                f"{what} needs role 'orchestrator'; Dendrite {self.dendrite_id!r} is a worker"
            )

    def _require_running(self, what: str) -> None:
        if not self._running:
            raise DendriteProtocolError(
                f"{what} needs a running Dendrite: use `async with dendrite:` or `await dendrite.start()`"
            )

    async def emit(self, signal: Signal) -> None:
        """Publish *signal*: only SYNAPSE_TYPES, and TASK/STOP only from an orchestrator."""
        if signal.type not in SYNAPSE_TYPES:
            raise DendriteProtocolError(
                f"emit() refuses {signal.type.value}: only the Axon/lifecycle paths may publish it"
            )
        if signal.type in ROLE_GATED_TYPES:
            self._require_orchestrator(f"emit({signal.type.value})")
        self._require_running("emit()")
        await self._publish(signal)

    # ------------------------------------------------------------ Pathways
    def _open_pathway(self, trace_id: str, role: str, scope: PathwayScope) -> Pathway:
        pathways = self._pathways.setdefault(trace_id, [])
        if role == "originator" and any(p.role == "originator" for p in pathways):
            raise PathwayBusyError(
                f"Dendrite {self.dendrite_id!r} already has an open Pathway originating trace {trace_id}; "
                "use dispatch_task() for follow-up TASKs on it, or close it first"
            )
        pw = Pathway(self, trace_id, role=role, scope=scope, max_buffer=self.pathway_buffer)  # type: ignore[arg-type]
        pathways.append(pw)
        return pw

    def _forget_pathway(self, pw: Pathway) -> None:
        pathways = self._pathways.get(pw.trace_id)
        if pathways is None:
            return
        try:
            pathways.remove(pw)
        except ValueError:
            return
        if not pathways:
            del self._pathways[pw.trace_id]

    def open_pathways(self, trace_id: str | None = None) -> list[Pathway]:
        """The Pathways open on this Dendrite (on one trace, or all)."""
        if trace_id is not None:
            return list(self._pathways.get(trace_id, ()))
        return [p for ps in self._pathways.values() for p in ps]

    async def observe_pathway(self, trace_id: str, *, scope: PathwayScope = "all") -> Pathway:
        """Watch a trace another peer started (no TASK is emitted)."""
        self._require_running("observe_pathway()")
        await self._ensure_pathway_subscriptions()
        return self._open_pathway(trace_id, "observer", scope)

    # ------------------------------------------------------------ dispatch
    def _build_task(
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
    ) -> Signal:
        if not isinstance(input, dict):
            raise TypeError(f"input must be a dict, got {type(input).__name__}")
        self._refuse_stopped(trace_id, "TASK")
        payload: dict[str, Any] = {"input": input}
        if context_ref:
            payload["context_ref"] = context_ref
        if capabilities:
            payload["capabilities"] = list(capabilities)
        if finalize:
            payload["finalize"] = True
        if parent_id is None:
            ambient = current_task.get()
            if ambient is not None:
                parent_id = ambient.id
        return Signal(
            type=T.TASK,
            trace_id=trace_id or new_trace_id(),
            parent_id=parent_id,
            directed=Directed(neuron) if neuron else None,
            payload=payload,
            meta=dict(meta or {}),
        )

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
    ) -> Signal:
        """Publish a TASK (addressed, capability-routed, or an open call); returns it."""
        self._require_orchestrator("dispatch_task()")
        self._require_running("dispatch_task()")
        task = self._build_task(
            neuron=neuron,
            input=input,
            trace_id=trace_id,
            parent_id=parent_id,
            context_ref=context_ref,
            capabilities=capabilities,
            finalize=finalize,
            meta=meta,
        )
        await self._publish(task)
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
    ) -> Pathway:
        """Open a Pathway on a (new) trace, then publish the TASK; returns the Pathway."""
        self._require_orchestrator("dispatch()")
        self._require_running("dispatch()")
        if finalize is None:
            finalize = scope == "terminal"
        task = self._build_task(
            neuron=neuron,
            input=input,
            trace_id=trace_id,
            parent_id=parent_id,
            context_ref=context_ref,
            capabilities=capabilities,
            finalize=finalize,
            meta=meta,
        )
        await self._ensure_pathway_subscriptions()
        pw = self._open_pathway(task.trace_id, "originator", scope)
        pw.task = task
        try:
            await self._publish(task)
        except BaseException:
            pw._close_now()
            raise
        return pw

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

        With ``retry=`` the same arc runs under ``run_with_retry``.
        """
        if retry is not None:
            return await self.run_with_retry(
                retry=retry, neuron=neuron, input=input, capabilities=capabilities, timeout_s=timeout_s,
                scope=scope, finalize=finalize, **kw,
            )  # fmt: skip
        pw = await self.dispatch(
            neuron=neuron, input=input, capabilities=capabilities, scope=scope, finalize=finalize, **kw
        )
        try:
            return await pw.wait(timeout_s)
        except PathwayTimeout:
            raise DispatchTimeout(
                f"no reply from {_describe_target(neuron, capabilities)} within {timeout_s} s "
                f"(trace {pw.trace_id}, TASK {pw.task.id if pw.task else '?'})"
            ) from None
        finally:
            pw._close_now()


def _describe_target(neuron: str | None, capabilities: list[str] | None) -> str:
    if neuron:
        return f"neuron {neuron!r}"
    if capabilities:
        return f"any neuron with capabilities {sorted(capabilities)}"
    return "any catch-all neuron (open call)"
