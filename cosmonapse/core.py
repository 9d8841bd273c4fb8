"""``Core``: the small, explicit heart of a Dendrite.

Everything a Dendrite does goes through these few things, and nothing else
touches the Synapse or starts work:

* **publish** a Signal (on its subject, routed TASKs on ``TASK.routed``);
* **subscribe** the Signal types the services want, and route what arrives
  through one table built from the services' declarations (``Service.routes``);
* **hand a job** to one of two bounded pools — ``run_task`` (inbound TASKs) and
  ``run_job`` (handlers, callbacks, hooks, internal follow-ups);
* **per-trace cancel scopes** (``trace_scope`` / ``cancel_trace``), and the
  tables of open **Pathways** (capped: ``max_open_pathways``) and request/reply
  **ops**;
* **guards**: running, orchestrator-only.

Control before data: STOP and STOPPED reach the router through a subscription of
their own on every role (an orchestrator's other types share one feed), and what
a STOP sets off — settlement, the STOPPED answer, a STOP the bus could not take
in time — runs in a **priority lane** (``run_priority``), a pool of its own that
the router hands work to without ever waiting.

The services (hosting, stops, handlers, engram, registry, bidding, decisions,
lifecycle) own their state and are composed by ``Dendrite``; the core knows
them only as ``Service`` objects.

Lifetime: ``open()`` spawns the core's own root task (a ``TaskHost``) which
hosts the pools' runners, the timer and clock tasks and the control loop, so
``start()`` and ``stop()`` may come from any task, in any order.  Work that
sync code asks for (a decorator registered on a running Dendrite, a reconnect
callback) goes to the control loop, never to a task of its own.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, Literal, Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup

from .clock import Clock
from .deadlines import Deadlines
from .errors import DendriteProtocolError, PathwayBusyError, SynapseClosedError
from .ops import OpTable
from .pathway import Callback, Pathway, PathwayRole, PathwayScope
from .prims import Prims
from .runners import Cancellable, FailureLog, JobFn, RunnerPool, call_any, describe_fn
from .signal import PATHWAY_TYPES, TERMINAL_TYPES, Signal, SignalType
from .subjects import signal_subject, subject_for
from .synapse.base import Handler, Subscription, Synapse
from .taskhost import TaskHost
from .telemetry import SWITCH as _TEL
from .telemetry import log_extra, refresh, unwatch, watch

__all__ = ["Core", "DendriteStats", "Role", "Route", "Service", "TombstoneStore"]

log: logging.Logger = logging.getLogger("cosmonapse.core")

T = SignalType
Role = Literal["orchestrator", "worker"]
#: What the router calls for a Signal of a type a service declared.
Route = Callable[[Signal], Awaitable[None]]
#: A route's synchronous twin: True when it routed the Signal at once, False (nothing done) if it would wait.
FastRoute = Callable[[Signal], bool]
#: Sync code's requests to the control loop: at most this many wait at once.
MAX_PENDING_CONTROL = 1024
#: Idle task runners kept for the next burst (the rest retire).
IDLE_TASK_RUNNERS = 256

#: Per synapse, the running cores with subscriptions still to make.  A publish by any
#: of them makes them all first, so a handler registered (a plain, sync call) on one
#: Dendrite hears what another Dendrite on the same synapse publishes right after.
_UNSETTLED: weakref.WeakKeyDictionary[Synapse, set[Core]] = weakref.WeakKeyDictionary()
#: Types that travel ahead of data: their own subscription, their follow-ups in the priority lane.
PRIORITY_TYPES = frozenset({T.STOP, T.STOPPED})
#: Runners of the priority lane (STOP settlement, STOPPED, STOPs sent late); more work waits in
#: its backlog (``runners.DEFAULT_BACKLOG``) without making the router wait.
PRIORITY_RUNNERS = 16
#: Open Pathways a Dendrite keeps before it closes the oldest one nobody is reading.
DEFAULT_MAX_OPEN_PATHWAYS = 10_000
#: How many traces an eviction looks at before it gives up (all of them have a reader waiting).
_EVICTION_SCAN = 64


@attrs.frozen
class DendriteStats:
    """What a Dendrite dropped or refused on purpose, each by a written policy (docs/architecture.md)."""

    #: Signals that work of a STOPped or cancelled trace tried to publish (a late reply, a
    #: THOUGHT_DELTA from a shielded section or a sync Neuron's thread): dropped.
    silenced: int = 0
    #: TASKs (and awards) delivered again with an id this Dendrite had already run: not run again.
    duplicate_tasks: int = 0
    #: Pathways closed because more than ``max_open_pathways`` were open and nobody read them.
    evicted_pathways: int = 0
    #: Failures of handlers and other jobs counted but not logged with a traceback (rate limit).
    suppressed_errors: int = 0


class TombstoneStore(Protocol):
    """The traces seen STOPped (``stops.StopTombstones``, in memory and optionally in a database).

    ``add`` and ``in`` are asked on the event loop's thread, from the router: keep
    them quick and in memory.  Durability is the two async calls, made off the
    router: ``load`` once at start (before anything is subscribed) and ``persist``
    for each STOP (before an orchestrator publishes it; in the STOP's job on a worker).
    """

    def add(self, trace_id: str) -> bool:
        """Remember *trace_id*; True if it was not remembered yet."""
        ...

    def __contains__(self, trace_id: object) -> bool: ...

    async def load(self) -> int:
        """Bring in the tombstones stored durably (other processes' STOPs); returns how many."""
        ...

    async def persist(self, trace_id: str) -> None:
        """Store *trace_id*'s tombstone durably, if there is somewhere to; never raises."""
        ...


class Service:
    """One part of a Dendrite built on the core.

    A service owns its state; it tells the core which Signal types it handles
    (``routes``) and which it needs subscribed right now (``wanted``), and takes
    part in the life cycle.  Defaults do nothing.
    """

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        """(type, route) pairs: the router calls each route for each Signal of that type."""
        return ()

    def wanted(self) -> Iterable[SignalType]:
        """The types this service needs delivered now (the core subscribes them)."""
        return ()

    def fast_routes(self) -> Iterable[tuple[SignalType, Route, FastRoute]]:
        """(type, route, its synchronous twin): used when that route is the type's only one."""
        return ()

    async def start(self) -> None:
        """The core is open (pools, task group), nothing is subscribed yet."""

    async def announce(self) -> None:
        """Subscriptions are in place: publish what the peers should hear first (REGISTER...)."""

    async def stopped(self, reason: str | None) -> None:
        """Every task has ended: say goodbye (DEREGISTER...) and release resources."""


class Core:
    """Publish, subscribe, pools, trace scopes, Pathway and op tables, guards."""

    def __init__(
        self,
        synapse: Synapse,
        *,
        namespace: str,
        dendrite_id: str,
        role: Role,
        max_concurrent_tasks: int,
        max_concurrent_handlers: int,
        pathway_buffer: int,
        shutdown_timeout_s: float,
        tombstones: TombstoneStore,
        max_open_pathways: int = DEFAULT_MAX_OPEN_PATHWAYS,
    ) -> None:
        self.synapse: Synapse = synapse
        self.namespace: str = namespace
        self.dendrite_id: str = dendrite_id
        self.role: Role = role
        self.max_concurrent_tasks: int = max_concurrent_tasks
        self.max_concurrent_handlers: int = max_concurrent_handlers
        self.pathway_buffer: int = pathway_buffer
        self.max_open_pathways: int = max_open_pathways
        self.shutdown_timeout_s: float = shutdown_timeout_s
        #: Traces seen STOPped: their work never starts again here.
        self.tombstones: TombstoneStore = tombstones
        #: Open request/reply ops (recall, imprint, decisions, bids, acks), by request id.
        self.ops: OpTable = OpTable()
        self.running: bool = False
        self.deadlines: Deadlines | None = None
        #: The running loop's own primitives (set again at start, inside the loop).
        self.prims: Prims = Prims.current_or_generic()
        self.clock: Clock = Clock(self._launch_tick)
        self._services: list[Service] = []
        # Traces in the order their first Pathway opened (evictions take the oldest first).
        self._pathways: dict[str, list[Pathway]] = {}
        self._open_pathways = 0
        # counters behind DendriteStats
        self.silenced: int = 0
        self.duplicate_tasks: int = 0
        self.evicted_pathways: int = 0
        self._suppressed_before = 0  # suppressed errors of pools already closed
        # user code's failures (handlers, callbacks, hooks), rate-limited per logger and job
        self._failure_logs: dict[str, FailureLog] = {}
        # a trace's one scope, or a set when it has several (one TASK per trace is the common case)
        self._trace_scopes: dict[str, Cancellable | set[Cancellable]] = {}
        self._host: TaskHost | None = None
        self._task_pool: RunnerPool | None = None
        self._job_pool: RunnerPool | None = None
        self._priority_pool: RunnerPool | None = None
        # routing and subscriptions
        self._table: dict[SignalType, tuple[Route, ...]] = {}
        self._fast: dict[SignalType, FastRoute] = {}
        self._sticky: set[SignalType] = set()  # wanted for good once asked (ops, Pathways)
        #: Every Pathway type is subscribed (``want_pathways`` was called).
        self.pathways_wanted: bool = False
        self._wanted: set[SignalType] = set()
        #: Handlers want the plain copy of capability-routed TASKs too.
        self.routed_copies: bool = False
        self._subs: dict[tuple[str, str | None], Subscription] = {}
        self._raw_subs: list[Subscription] = []
        self._sub_lock: anyio.Lock | None = None
        self._subs_dirty = False
        #: The cores of this synapse with subscriptions pending (this one included, when it has).
        self._unsettled: set[Core] = _UNSETTLED.setdefault(synapse, set())
        # An orchestrator reads every type but TASK through one subscription (one
        # pump), so the Signals of a trace reach its Pathway in publish order and it
        # does not get its own TASKs back; STOP and STOPPED come through a second one,
        # so they never wait behind that feed's backlog.  Workers subscribe to exact
        # subjects only (each its own pump).
        orchestrator = role == "orchestrator"
        self._priority_subjects = (
            frozenset(subject_for(namespace, t) for t in PRIORITY_TYPES) if orchestrator else frozenset()
        )
        self._feed_subjects = (
            frozenset(
                subject_for(namespace, t) for t in SignalType if t is not T.TASK and t not in PRIORITY_TYPES
            )
            if orchestrator
            else frozenset()
        )
        self._subject_cache: dict[SignalType, str] = {}
        # the control loop: work sync code asked for
        self._control: deque[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = deque()
        self._control_wake: anyio.Event | None = None
        # the event loop the core runs on, for sync calls made from another thread
        self._loop_token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self.refresh()

    # ------------------------------------------------------------------ services and routes
    def add_service(self, service: Service) -> None:
        self._services.append(service)
        self.refresh()

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(self._services)

    def refresh(self) -> None:
        """Rebuild the routing table and the wanted set from the services' declarations.

        Sync: call it whenever a service's declarations change.  On a running core,
        missing subscriptions are made by the control loop; ``publish`` waits for them.
        """
        table: dict[SignalType, list[Route]] = {t: [self._deliver] for t in PATHWAY_TYPES}
        deliver, deliver_nowait = self._deliver, self._deliver_nowait
        twins: dict[tuple[SignalType, Route], FastRoute] = {(t, deliver): deliver_nowait for t in table}
        wanted = set(self._sticky)
        for service in self._services:
            for stype, route in service.routes():
                table.setdefault(stype, []).append(route)
            for stype, route, twin in service.fast_routes():
                twins[(stype, route)] = twin
            wanted.update(service.wanted())
        self._table = {t: tuple(routes) for t, routes in table.items()}
        self._fast = {t: twins[(t, r[0])] for t, r in table.items() if len(r) == 1 and (t, r[0]) in twins}
        self._wanted = wanted
        if self.running and self._missing():
            self._subs_dirty = True
            self._unsettled.add(self)
            self._wake_control()

    def _wanted_subjects(self) -> Iterator[str]:
        for stype in self._wanted:
            yield self.subject(stype)
        if self.routed_copies and T.TASK in self._wanted:
            yield self.subject(T.TASK, routed=True)

    def _missing(self) -> list[str]:
        return [
            s
            for s in self._wanted_subjects()
            if (s, None) not in self._subs
            and s not in self._feed_subjects
            and s not in self._priority_subjects
        ]

    async def route(self, sig: Signal) -> None:
        """The handler every subscription of the core feeds: run the type's routes in order.

        Runs on the synapse's pump: routes file Signals and hand work to the pools;
        they never run user code here.
        """
        if not self.running:
            return
        routes = self._table.get(sig.type)
        if routes is not None:
            if (otel := _TEL.impl) is not None:  # OpenTelemetry: the Signal's context is current meanwhile
                await otel.route(sig, routes)
                return
            for route in routes:
                await route(sig)

    def route_nowait(self, sig: Signal) -> bool:
        """``route`` at once, from the bus, when nothing is queued ahead of *sig* on its subscription.

        True when routed (or there is nothing to route); False, with nothing done, when a
        route may have to wait (a full pool, a Pathway's callbacks, any route without a
        synchronous twin): then the subscription's pump calls ``route`` as before.
        """
        if not self.running:
            return True
        fast = self._fast.get(sig.type)
        if fast is None or _TEL.impl is not None:
            return sig.type not in self._table
        return fast(sig)

    def _deliver_nowait(self, sig: Signal) -> bool:
        """``_deliver`` when no Pathway of the trace runs ``on()`` callbacks for *sig*; else False."""
        pathways = self._pathways.get(sig.trace_id)
        if pathways:
            for pw in pathways:
                if pw._needs_callbacks(sig):
                    return False
        if sig.parent_id is not None and self.ops:
            self.ops.deliver(sig)
        if pathways:
            for pw in list(pathways):
                pw._deliver_nowait(sig)
        if sig.type in TERMINAL_TYPES and self.ops:
            self.ops.fail_trace(sig.trace_id, "ended")
        return True

    async def _deliver(self, sig: Signal) -> None:
        """Core route of every Pathway type: replies to ops, then the trace's Pathways."""
        if sig.parent_id is not None and self.ops:
            self.ops.deliver(sig)
        pathways = self._pathways.get(sig.trace_id)
        if pathways:
            for pw in list(pathways):
                await pw._deliver(sig)
        if sig.type in TERMINAL_TYPES and self.ops:
            self.ops.fail_trace(sig.trace_id, "ended")

    # ------------------------------------------------------------------ subscriptions
    def subject(self, signal_type: SignalType, *, routed: bool = False) -> str:
        return subject_for(self.namespace, signal_type, routed=routed)

    async def want(self, *types: SignalType) -> None:
        """Keep *types* subscribed from now on, and wait until they are."""
        new = set(types) - self._sticky
        if new:
            self._sticky |= new
            self.refresh()
        if self.running and self._missing():
            await self.settle()

    async def want_pathways(self) -> None:
        """Every Pathway type, subscribed (workers need it to open a Pathway)."""
        if not self.pathways_wanted:
            self.pathways_wanted = True
            await self.want(*PATHWAY_TYPES)

    async def settle(self) -> None:
        """Make every missing subscription now."""
        lock = self._sub_lock
        if lock is None or not self.running:
            self._subs_dirty = False
            self._unsettled.discard(self)
            return
        async with lock:
            self._subs_dirty = False
            for subject in self._missing():
                if not self.running:
                    break
                sub = self._subs[(subject, None)] = await self.synapse.subscribe(subject, self.route)
                sub.fast = self.route_nowait
            if not self._subs_dirty:
                self._unsettled.discard(self)

    async def _settle_synapse(self) -> None:
        """Make the pending subscriptions of every core on this synapse (before a publish)."""
        for core in list(self._unsettled):
            if core is self:
                await core.settle()
                continue
            try:
                await core.settle()
            except Exception:  # the other Dendrite's own control loop reports its failure
                log.debug("%s: settling the subscriptions of %s failed", self.dendrite_id, core.dendrite_id)

    async def subscribe_group(self, subject: str, group: str, handler: Handler) -> None:
        """A queue-group subscription (capability-routed TASKs), made now."""
        if self.running and (subject, group) not in self._subs:
            self._subs[(subject, group)] = await self.synapse.subscribe(subject, handler, queue_group=group)

    async def drop_group(self, subject: str, group: str) -> None:
        sub = self._subs.pop((subject, group), None)
        if sub is not None:
            await self.synapse.unsubscribe(sub)

    async def subscribe_raw(
        self, signal_type: SignalType, handler: Handler, queue_group: str | None
    ) -> Subscription:
        """A subscription of the user's own, its Signals handed to the job pool."""

        async def job(sig: Signal) -> None:
            await self.run_job(handler, sig)

        async def forward(sig: Signal) -> None:
            if (otel := _TEL.impl) is not None:
                await otel.route(sig, (job,))
            else:
                await self.run_job(handler, sig)

        sub = await self.synapse.subscribe(self.subject(signal_type), forward, queue_group=queue_group)
        sub._unsubscriber = self.unsubscribe_raw
        self._raw_subs.append(sub)
        return sub

    async def unsubscribe_raw(self, sub: Subscription) -> None:
        if sub in self._raw_subs:
            self._raw_subs.remove(sub)
        await self.synapse.unsubscribe(sub)

    async def _unsubscribe_all(self) -> None:
        subs = list(self._subs.values()) + self._raw_subs
        self._subs.clear()
        self._raw_subs.clear()
        for sub in subs:
            try:
                await self.synapse.unsubscribe(sub)
            except Exception:
                log.warning("unsubscribe of %s failed", sub.subject, exc_info=True)

    # ------------------------------------------------------------------ publishing
    def _subject_of(self, sig: Signal) -> str:
        """``signal_subject``, from a per-type cache unless *sig* is a capability-routed TASK."""
        stype = sig.type
        if stype is T.TASK and ((d := sig.directed) is None or not d.id):
            return signal_subject(self.namespace, sig)  # routed, or an open call
        subject = self._subject_cache.get(stype)
        if subject is None:
            subject = self._subject_cache[stype] = signal_subject(self.namespace, sig)
        return subject

    def publish_nowait(self, sig: Signal) -> bool:
        """Publish *sig* now if the bus takes it without waiting; False, with nothing sent, otherwise.

        Also False while subscriptions are pending on this synapse, or with OpenTelemetry
        on (its PRODUCER span goes with ``publish``): ``publish`` does that part.
        """
        if self._unsettled or _TEL.impl is not None:
            return False
        return self.synapse.publish_nowait(self._subject_of(sig), sig)

    async def publish_by(self, sig: Signal, deadline: float | None) -> bool:
        """Publish *sig* unless *deadline* (``anyio.current_time()`` based) passes first.

        True when published.  A bus usually takes a Signal at once
        (``Synapse.publish_nowait``): then no cancel scope is paid for.  Only when it
        would make us wait (an outage, a full buffer) does the wait run in a scope that
        ends at the deadline; publishing is cancellation-safe, so False means nothing
        was queued (see ``Synapse.publish``).
        """
        if deadline is None:
            await self.publish(sig)
            return True
        if self.publish_nowait(sig):
            return True
        with anyio.CancelScope(deadline=deadline):
            await self.publish(sig)
            return True
        return False

    async def publish_in_scope(self, scope: Cancellable, sig: Signal) -> bool:
        """Publish what the work of a trace produced (a Neuron's reply or emit), unless that work is over.

        It is over once its *scope* was cancelled (STOP, ``cancel_trace``, ``stop()``),
        its trace is STOPped here, or the Dendrite is stopping: then *sig* is dropped,
        counted (``DendriteStats.silenced``) and logged at DEBUG.  True when published.
        """
        if sig.trace_id in self.tombstones or not self.running or scope.cancel_called:
            self.silence(sig)
            return False
        await self.publish(sig)
        return True

    def silence(self, sig: Signal) -> None:
        """Drop *sig*, which work of a stopped or cancelled trace tried to publish."""
        self.silenced += 1
        log.debug(
            "Dendrite %s: dropped %s %s on trace %s: that work was STOPped or cancelled",
            self.dendrite_id,
            sig.type.value,
            sig.id,
            sig.trace_id,
        )

    async def publish(self, sig: Signal) -> None:
        """Publish *sig* on its subject, after the subscriptions sync code asked for.

        Those of every Dendrite on this synapse: a handler registered on one is live
        for what any of them publishes next.
        """
        if self._unsettled:
            await self._settle_synapse()
        await self.publish_on(self._subject_of(sig), sig)

    async def publish_on(self, subject: str, sig: Signal) -> None:
        """Publish *sig* on *subject* exactly (a routed TASK handed back to its own queue group)."""
        try:
            if (otel := _TEL.impl) is not None:  # OpenTelemetry: a PRODUCER span, the trace context into meta
                await otel.publish(self, subject, sig)
            else:
                await self.synapse.publish(subject, sig)
        except SynapseClosedError as exc:
            raise SynapseClosedError(
                f"Dendrite {self.dendrite_id!r} cannot publish {sig.type.value}: its synapse is closed "
                f"({exc}); the synapse's owner must keep it connected while the Dendrite runs"
            ) from exc

    # ------------------------------------------------------------------ guards
    def require_orchestrator(self, what: str) -> None:
        if self.role != "orchestrator":
            raise DendriteProtocolError(
                f"{what} needs role 'orchestrator'; Dendrite {self.dendrite_id!r} is a worker"
            )

    def require_running(self, what: str) -> None:
        host = self._host
        if not self.running or host is None:
            raise DendriteProtocolError(
                f"{what} needs a running Dendrite: use `async with dendrite:` or `await dendrite.start()`"
            )
        if host.failure is not None:
            host.check()  # raises TaskHostFailed, the background failure as its cause

    # ------------------------------------------------------------------ work
    @property
    def task_group(self) -> TaskGroup:
        """The core's task group, for long-lived service tasks (a Neuron's session, say)."""
        if self._host is None:
            raise DendriteProtocolError(f"Dendrite {self.dendrite_id!r} is not running")
        return self._host.task_group

    def start_service_task(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        """A long-lived task of a service (the registry mirror loop), joined at stop."""
        if self._host is None:
            raise DendriteProtocolError(f"Dendrite {self.dendrite_id!r} is not running")
        self._host.start_soon(fn, *args, name=f"{name}:{self.dendrite_id}")

    async def run_task(self, fn: JobFn, *args: Any) -> None:
        """Hand an inbound TASK's work to the task pool (waits for a free runner).

        The TASK is the job's last argument (telemetry reads it there).
        """
        pool = self._task_pool
        if pool is not None and self.running:
            try:
                if (otel := _TEL.impl) is not None:  # OpenTelemetry: the TASK's CONSUMER span around the job
                    await pool.submit(otel.task_job(self, fn, args))
                else:
                    await pool.submit(fn, *args)
            except anyio.ClosedResourceError:
                pass  # stopping: dropped like any TASK that arrives after stop

    def try_run_task(self, fn: JobFn, *args: Any) -> bool:
        """``run_task`` if a runner is free now; False (nothing done) when it would wait."""
        pool = self._task_pool
        if pool is None or not self.running:
            return True  # stopping: dropped, as run_task drops it
        if _TEL.impl is not None:
            return False
        return pool.try_hand_over(fn, *args)

    @property
    def tasks_saturated(self) -> bool:
        """The task pool is full: a new TASK would wait for a runner."""
        pool = self._task_pool
        return pool is not None and pool.saturated

    @property
    def tasks_running(self) -> int:
        """TASKs running on the task pool now."""
        pool = self._task_pool
        return pool.busy if pool is not None else 0

    async def run_job(self, fn: JobFn | Callback, *args: Any) -> None:
        """Hand a job (a handler call, a callback, a hook, a follow-up) to the job pool."""
        pool = self._job_pool
        if pool is not None and self.running:
            try:
                if (otel := _TEL.impl) is not None:  # OpenTelemetry: the job runs in its Signal's context
                    await pool.submit(otel.handler_job(self, self._call, fn, args))
                else:
                    await pool.submit(self._call, fn, args)
            except anyio.ClosedResourceError:
                pass  # stopping

    async def run_for(self, sig: Signal, fn: JobFn | Callback, *args: Any) -> None:
        """``fn(*args)``, a handler or callback job for *sig*, in the job pool.

        For STOP and STOPPED it never makes the router wait: with every runner busy
        the job is queued (bounded) and runs when one is free, so a full job pool
        cannot hold up the next STOP.
        """
        pool = self._job_pool
        if sig.type in PRIORITY_TYPES and pool is not None and self.running:
            try:
                if (otel := _TEL.impl) is not None:
                    queued = pool.submit_nowait(otel.handler_job(self, self._call, fn, args))
                else:
                    queued = pool.submit_nowait(self._call, fn, args)
                if queued:
                    return
            except anyio.ClosedResourceError:
                return  # stopping
        await self.run_job(fn, *args)

    async def run_handler(
        self, call: Callable[[Callback, tuple[Signal]], Awaitable[None]], fn: Callback, sig: Signal
    ) -> None:
        """One user handler call for *sig*, made by a job that is already running (per-trace order).

        ``call(fn, (sig,))`` does the call and logs a failure; with an SDK it runs in a
        CONSUMER span of its own, parented on the context *sig* carried.
        """
        if (otel := _TEL.impl) is not None:
            await otel.handler_job(self, call, fn, (sig,))()
        else:
            await call(fn, (sig,))

    def failure_log(self, logger: logging.Logger) -> FailureLog:
        """The rate-limited log of user code's failures on *logger* (one per logger, counted in stats)."""
        failures = self._failure_logs.get(logger.name)
        if failures is None:
            failures = self._failure_logs[logger.name] = FailureLog(logger)
        return failures

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run a job that may be sync or async (user handlers and hooks are either); log its failure."""
        try:
            await call_any(fn, *args)
        except Exception as exc:
            sig = args[0] if args and isinstance(args[0], Signal) else None
            what = f"{self.dendrite_id}: job {describe_fn(fn)}"
            self.failure_log(log).failed(what, exc, extra=log_extra(sig))
            if (otel := _TEL.impl) is not None:
                otel.failed(exc)

    async def run_callback(self, fn: Callback, sig: Signal) -> None:
        """``PathwayHost``: a Pathway's ``on()`` callback, in the job pool."""
        await self.run_for(sig, fn, sig)

    async def run_priority(self, fn: JobFn, *args: Any) -> None:
        """Work a STOP sets off (settlement, STOPPED, a late STOP), apart from the job pool.

        Never waits while fewer than the backlog limit (10,000) are queued, so the
        router's STOP bookkeeping is never held up by handlers or by earlier STOPs.
        """
        pool = self._priority_pool
        if pool is None or not self.running:
            return
        job, job_args = self._priority_job(fn, args)
        try:
            if not pool.submit_nowait(job, *job_args):
                await pool.submit(job, *job_args)  # 10,000 queued: only then does the caller wait
        except anyio.ClosedResourceError:
            pass  # stopping

    def try_priority(self, fn: JobFn, *args: Any) -> bool:
        """``run_priority`` for callers that cannot wait at all; False when refused."""
        pool = self._priority_pool
        if pool is None or not self.running:
            return False
        job, job_args = self._priority_job(fn, args)
        try:
            return pool.submit_nowait(job, *job_args)
        except anyio.ClosedResourceError:
            return False

    def _priority_job(self, fn: JobFn, args: tuple[Any, ...]) -> tuple[JobFn, tuple[Any, ...]]:
        """With OpenTelemetry, the job runs in a span of the Signal it is for (its first argument)."""
        if (otel := _TEL.impl) is not None:
            return otel.handler_job(self, self._call, fn, args), ()
        return fn, args

    def on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run the sync *fn* on the core's event loop: now if this is its thread, else there, waiting.

        Registering a handler from another thread (seed 000's Flask app decorates a
        Dendrite whose loop runs in a background thread) must not touch the core's
        tables while the loop reads them.
        """
        token = self._loop_token
        if token is None or threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            anyio.from_thread.run_sync(fn, *args, token=token)

    def soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Ask the control loop to run ``await fn(*args)`` (for sync callers on a running core)."""
        if not self.running:
            return
        if len(self._control) >= MAX_PENDING_CONTROL:
            raise DendriteProtocolError(
                f"Dendrite {self.dendrite_id!r}: {MAX_PENDING_CONTROL} requests already wait for its "
                "control loop; slow down registrations"
            )
        self._control.append((fn, args))
        self._wake_control()

    def _wake_control(self) -> None:
        if self._control_wake is not None:
            self._control_wake.set()

    async def _control_loop(self) -> None:
        while True:
            wake = self._control_wake = anyio.Event()
            if not self.running or not (self._subs_dirty or self._control):
                await wake.wait()
                continue
            if self._subs_dirty:
                await self.settle()
            while self._control and self.running:
                fn, args = self._control.popleft()
                try:
                    await fn(*args)
                except Exception:
                    log.exception("Dendrite %s: %r failed", self.dendrite_id, fn)

    async def _launch_tick(self, fn: Callable[[], Awaitable[Any]]) -> None:
        pool = self._job_pool
        if pool is not None and self.running:
            try:
                await pool.submit(fn)
            except anyio.ClosedResourceError:
                pass  # stopping: the clock is cancelled next

    # ------------------------------------------------------------------ trace scopes
    def file_scope(self, trace_id: str, scope: Cancellable) -> None:
        """File *scope* under *trace_id*: ``cancel_trace`` cancels it (call ``unfile_scope`` after)."""
        table = self._trace_scopes
        filed = table.get(trace_id)
        if filed is None:
            table[trace_id] = scope
        elif isinstance(filed, set):
            filed.add(scope)
        else:
            table[trace_id] = {filed, scope}

    def unfile_scope(self, trace_id: str, scope: Cancellable) -> None:
        table = self._trace_scopes
        filed = table.get(trace_id)
        if filed is scope:
            del table[trace_id]
        elif isinstance(filed, set):
            filed.discard(scope)
            if not filed:
                del table[trace_id]

    def cancel_trace(self, trace_id: str) -> int:
        """Cancel every scope of *trace_id*; returns how many."""
        filed = self._trace_scopes.pop(trace_id, None)
        if filed is None:
            return 0
        scopes = filed if isinstance(filed, set) else (filed,)
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    # ------------------------------------------------------------------ Pathways
    def open_pathway(self, trace_id: str, role: PathwayRole, scope: PathwayScope) -> Pathway:
        """Open a Pathway on *trace_id*; over ``max_open_pathways``, the oldest unread one closes first."""
        if role == "originator":
            self.refuse_second_originator(trace_id)
        if self._open_pathways >= self.max_open_pathways:
            self._evict_pathway()
        pw = Pathway(trace_id, host=self, role=role, scope=scope, max_buffer=self.pathway_buffer)
        self._pathways.setdefault(trace_id, []).append(pw)
        self._open_pathways += 1
        return pw

    def refuse_second_originator(self, trace_id: str) -> None:
        """``PathwayBusyError`` when this Dendrite already originates *trace_id* on an open Pathway."""
        existing = self._pathways.get(trace_id)
        if existing and any(p.role == "originator" for p in existing):
            raise PathwayBusyError(
                f"Dendrite {self.dendrite_id!r} already has an open Pathway originating trace {trace_id}; "
                "use dispatch_task() for follow-up TASKs on it, or close it first"
            )

    def _evict_pathway(self) -> None:
        """Close the oldest open Pathway that no reader is waiting on (the cap's policy).

        Traces whose Pathways all have a reader waiting move to the back (they are in
        use); after a bounded look the new Pathway opens over the cap instead.
        """
        table = self._pathways
        for _ in range(min(len(table), _EVICTION_SCAN)):
            trace_id = next(iter(table))
            pathways = table[trace_id]
            victim = next((p for p in pathways if not p._has_reader()), None)
            if victim is not None:
                self.evicted_pathways += 1
                if self.evicted_pathways == 1 or self.evicted_pathways % 1000 == 0:
                    log.warning(
                        "Dendrite %s: more than %d Pathways open; closing the oldest ones nobody reads "
                        "(%d so far; close Pathways you are done with)",
                        self.dendrite_id,
                        self.max_open_pathways,
                        self.evicted_pathways,
                    )
                victim._close_now(f"evicted: over max_open_pathways={self.max_open_pathways} open Pathways")
                return
            del table[trace_id]
            table[trace_id] = pathways

    def forget(self, pathway: Pathway) -> None:
        """``PathwayHost``: *pathway* closed."""
        pathways = self._pathways.get(pathway.trace_id)
        if pathways is None:
            return
        try:
            pathways.remove(pathway)
        except ValueError:
            return
        self._open_pathways -= 1
        if not pathways:
            del self._pathways[pathway.trace_id]

    def pathways(self, trace_id: str | None = None) -> list[Pathway]:
        if trace_id is not None:
            return list(self._pathways.get(trace_id, ()))
        return [p for ps in self._pathways.values() for p in ps]

    def close_pathways(self, trace_id: str, why: str | None = None) -> bool:
        """Close the trace's Pathways (readers are told *why*); True if there were any."""
        pathways = list(self._pathways.get(trace_id, ()))
        for pw in pathways:
            pw._close_now(why)
        return bool(pathways)

    # ------------------------------------------------------------------ counters
    def stats(self) -> DendriteStats:
        suppressed = self._suppressed_before + sum(f.suppressed for f in self._failure_logs.values())
        suppressed += sum(
            p.failures.suppressed
            for p in (self._task_pool, self._job_pool, self._priority_pool)
            if p is not None
        )
        return DendriteStats(
            silenced=self.silenced,
            duplicate_tasks=self.duplicate_tasks,
            evicted_pathways=self.evicted_pathways,
            suppressed_errors=suppressed,
        )

    # ------------------------------------------------------------------ life cycle
    async def open(self) -> None:
        """Spawn the root task and start the core's own tasks; the caller subscribes after."""
        if self.running:
            raise DendriteProtocolError(f"Dendrite {self.dendrite_id!r} is already running")
        host = TaskHost(f"dendrite:{self.dendrite_id}")
        if refresh() and (otel := _TEL.impl) is not None:  # OpenTelemetry: our tasks start span-less
            token = otel.detached()
            try:
                await host.open()
            finally:
                otel.reattach(token)
        else:
            await host.open()
        self._loop_token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        watch(self, self.dendrite_id, self._gauges)
        self._host = host
        tg = host.task_group
        self.prims = Prims.current()
        self.deadlines = Deadlines()
        # Up to max_concurrent_tasks run at once (10,000 by default: I/O-bound Neurons), but
        # only a few hundred idle runners are kept after a burst (each holds a task's memory).
        idle = min(self.max_concurrent_tasks, IDLE_TASK_RUNNERS)
        self._task_pool = RunnerPool(tg, self.max_concurrent_tasks, max_idle=idle, name="task", scoped=True)
        self._job_pool = RunnerPool(tg, self.max_concurrent_handlers, name="handler")
        self._priority_pool = RunnerPool(tg, PRIORITY_RUNNERS, name="priority")
        self._sub_lock = anyio.Lock()
        self._control_wake = anyio.Event()
        self._subs_dirty = False
        self._unsettled.discard(self)
        self.running = True
        host.start_soon(self.deadlines.run, name=f"deadlines:{self.dendrite_id}")
        host.start_soon(self._control_loop, name=f"control:{self.dendrite_id}")
        if self._feed_subjects:
            feed = sorted(self._feed_subjects)
            sub = self._subs[("feed", None)] = await self.synapse.subscribe(feed, self.route)
            sub.fast = self.route_nowait
            priority = sorted(self._priority_subjects)
            self._subs[("priority", None)] = await self.synapse.subscribe(priority, self.route)

    def _gauges(self) -> tuple[int, int]:
        """(traces with an open Pathway or a running TASK, running TASKs), for telemetry's gauges."""
        pool = self._task_pool
        return len(self._pathways.keys() | self._trace_scopes.keys()), pool.busy if pool is not None else 0

    @property
    def is_open(self) -> bool:
        """True from ``open()`` until ``close()`` has finished (running, starting or stopping)."""
        return self._host is not None

    def start_clock(self) -> None:
        if self._host is not None:
            self._host.start_soon(self.clock.run, name=f"clock:{self.dendrite_id}")

    async def close(self) -> None:
        """Unsubscribe, refuse and cancel work, join every task; raise a background failure.

        Bounded where it can be: unsubscribing by ``shutdown_timeout_s``.  Joining waits
        for every task (a plain Neuron in a thread cannot be interrupted).
        """
        host = self._host
        if host is None:
            return
        self.running = False
        unwatch(self)
        self._unsettled.discard(self)
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_timeout_s):
                await self._unsubscribe_all()
        finally:
            # Refuse new jobs (a router blocked handing one over is released), cancel
            # every child (Neurons mid-flight see cancellation and run their finally
            # blocks) and wait for them.
            for pool in (self._task_pool, self._job_pool, self._priority_pool):
                if pool is not None:
                    pool.close()
                    self._suppressed_before += pool.failures.suppressed
            self.ops.fail_all(f"Dendrite {self.dendrite_id!r} stopped")
            self._control.clear()
            try:
                await host.aclose()
            finally:
                self._host = None
                self._loop_token = self._loop_thread = None
                self.deadlines = None
                self._task_pool = self._job_pool = self._priority_pool = None
                for failures in self._failure_logs.values():
                    failures.flush()  # the "raised N more times" lines still owed
                self._control_wake = None
                self._sub_lock = None
                self._subs_dirty = False
                self.clock.clear()
                self._trace_scopes.clear()
                for pathways in list(self._pathways.values()):
                    for pw in list(pathways):
                        pw._close_now()
