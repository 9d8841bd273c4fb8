"""``AxonHosting``: the service that hosts Axons — announce, route TASKs to them, run them.

* TASKs addressed to a hosted neuron id, open calls (to a ``catch_all`` Axon)
  and capability-routed TASKs (taken from the ``caps:<sorted capabilities>``
  queue group, so one host of a group runs each) go to the core's task pool;
  each runs in a cancel scope filed under its trace, which STOP cancels.
* A TASK delivered again with an id this Dendrite already ran (or is running)
  is not run again: the ids of the TASKs (and awards) it took are kept in a
  window of at most ``SEEN_TASKS`` ids and ``SEEN_TASKS_TTL_S`` seconds
  (``ids.SeenIds``); a redelivery after that runs again.
* What a TASK's work emits through its NeuronContext goes out only while that
  work is live: once its scope is cancelled or its trace STOPped, it is dropped
  and counted (``Core.publish_in_scope``); a cancelled TASK has no reply at all.
* Load shedding: when the task pool is full (``max_concurrent_tasks`` running), a
  capability-routed TASK is handed back to the queue group (re-published on the
  group's own subject, ``TASK.routed.<key of the group>``, which only that group's
  members subscribe — in the same queue group — so it reaches no other group and
  no observer twice; a decline count in ``meta``) so an idle member takes it; after ``MAX_DECLINES``
  hand-backs it is kept and waits here, as addressed TASKs do (the TASK pump
  waits for a runner; the bus buffers behind it, bounded by its pending limits).
  We decline rather than leave the queue group: if every member left, NATS
  would drop the group's TASKs instead of queueing them.  A waiting TASK whose
  trace is STOPped meanwhile never starts.
* REGISTER for each Axon at start (and after a reconnect, and with each
  heartbeat when ``reregister_on_heartbeat``), HEARTBEAT every ``heartbeat_s``,
  DEREGISTER at stop; DISCOVER is answered with REGISTERs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import attrs

from .axon import Axon
from .context import NeuronContext, current_task
from .core import Core, FastRoute, Route, Service
from .errors import DendriteProtocolError
from .ids import SeenIds
from .runners import JobScope, job_scope
from .signal import Directed, Signal, SignalType
from .telemetry import log_extra

__all__ = [
    "DECLINES_KEY",
    "MAX_DECLINES",
    "SEEN_TASKS",
    "SEEN_TASKS_TTL_S",
    "AxonHosting",
    "TaskLoad",
    "is_routed_task",
]

log: logging.Logger = logging.getLogger("cosmonapse.hosting")
T = SignalType
#: ``meta`` key counting how often saturated workers handed a routed TASK back to its group.
DECLINES_KEY = "cosmonapse_declines"
#: A routed TASK is handed back at most this many times; then the worker holding it keeps it.
#: NATS picks a queue-group member at random, so with one full member out of two a TASK
#: comes back to it 16 times in a row once in 65,536; when every member is full it costs
#: 16 extra publishes before it waits (an overload: the Neurons, not the bus, are the limit).
MAX_DECLINES = 16
#: Longest a hand-back may take to publish; past it the TASK is kept and waits here.
DECLINE_PUBLISH_TIMEOUT_S = 1.0
#: TASK ids (and award ids) a Dendrite remembers, and for how long, so a redelivery is not run twice.
SEEN_TASKS = 10_000
SEEN_TASKS_TTL_S = 600.0


@attrs.frozen
class TaskLoad:
    """A worker's TASK load now, and what load shedding did so far (for monitoring)."""

    #: TASKs running now, and the most that may (``max_concurrent_tasks``).
    running: int
    limit: int
    #: The task pool is full: routed TASKs are handed back, addressed ones wait.
    saturated: bool
    #: TASKs that waited for a free runner.
    waited: int
    #: Capability-routed TASKs handed back to the queue group while full.
    declined: int
    #: TASKs not run because their trace was STOPped.
    refused_stopped: int


def is_routed_task(sig: Signal) -> bool:
    """A capability-routed TASK (no neuron named, capabilities given)."""
    return (sig.directed is None or not sig.directed.id) and bool(sig.payload.get("capabilities"))


class AxonHosting(Service):
    """The Axons of one Dendrite and the TASKs they run."""

    def __init__(
        self,
        core: Core,
        *,
        heartbeat_s: float,
        reregister_on_heartbeat: bool,
        answers_discover: Callable[[], bool],
        refreshed: Callable[[], Awaitable[None]],
        context_host: object = None,
    ) -> None:
        self._core = core
        self.heartbeat_s: float = heartbeat_s
        self.reregister_on_heartbeat: bool = reregister_on_heartbeat
        self._answers_discover = answers_discover  # False when a DISCOVER handler answers instead
        self._refreshed = refreshed  # after each heartbeat round and each change of the Axons
        self._context_host = context_host  # what NeuronContext.recall/imprint go through
        self.axons: dict[str, Axon] = {}
        self._group: str | None = None
        self.seen: SeenIds = SeenIds(SEEN_TASKS, SEEN_TASKS_TTL_S)
        self._returns: str | None = None  # the subject only our queue group hears: TASKs handed back
        #: Capability-routed TASKs handed back to the queue group because the task pool was full.
        self.declined: int = 0
        #: TASKs that had to wait for a runner (the pool was full when they arrived).
        self.waited: int = 0
        #: TASKs not run because their trace was STOPped (on arrival or while they waited).
        self.refused_stopped: int = 0

    # ------------------------------------------------------------------ declarations
    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return ((T.TASK, self._on_task), (T.DISCOVER, self._on_discover))

    def fast_routes(self) -> Iterable[tuple[SignalType, Route, FastRoute]]:
        return ((T.TASK, self._on_task, self._on_task_nowait),)

    def wanted(self) -> Iterable[SignalType]:
        return (T.TASK, T.DISCOVER) if self.axons else ()

    @property
    def capabilities(self) -> list[str]:
        return sorted({c for a in self.axons.values() for c in a.capabilities})

    def load(self) -> TaskLoad:
        core = self._core
        return TaskLoad(
            running=core.tasks_running,
            limit=core.max_concurrent_tasks,
            saturated=core.tasks_saturated,
            waited=self.waited,
            declined=self.declined,
            refused_stopped=self.refused_stopped,
        )

    # ------------------------------------------------------------------ attach / detach
    def attach(self, axon: Axon) -> None:
        if axon.neuron_id in self.axons:
            raise DendriteProtocolError(f"an Axon with neuron_id {axon.neuron_id!r} is already attached")
        self.axons[axon.neuron_id] = axon
        self._core.refresh()

    async def add(self, axon: Axon) -> None:
        """Attach while running: serve, subscribe, REGISTER now."""
        self.attach(axon)
        if self._core.running:
            await axon.serve_neuron(self._core.task_group)
            await self._sync_group()
            await self._core.publish(axon.register_signal())
            await self._refreshed()

    async def detach(self, neuron_id: str, reason: str | None) -> None:
        axon = self.axons.pop(neuron_id, None)
        if axon is None:
            raise DendriteProtocolError(f"no Axon {neuron_id!r} is attached")
        self._core.refresh()
        if self._core.running:
            await self._sync_group()
            await self._deregister(axon, reason)
            await self._refreshed()
        await axon.aclose()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        for axon in list(self.axons.values()):
            await axon.serve_neuron(self._core.task_group)

    async def announce(self) -> None:
        await self._sync_group()
        await self.register_all()
        if self.heartbeat_s > 0:
            self._core.clock.add(self.heartbeat_s, self.heartbeat, name="heartbeat")

    async def register_all(self) -> None:
        for axon in list(self.axons.values()):
            await self._core.publish(axon.register_signal())

    async def heartbeat(self) -> None:
        """One heartbeat round: REGISTER (optionally) and HEARTBEAT for every Axon."""
        if not self.axons:
            return
        for axon in list(self.axons.values()):
            try:
                if self.reregister_on_heartbeat:
                    await self._core.publish(axon.register_signal())
                await self._core.publish(
                    Signal(type=T.HEARTBEAT, directed=Directed(axon.neuron_id), payload={"status": "ok"})
                )
            except Exception:
                log.warning("heartbeat for %s failed", axon.neuron_id, exc_info=True)
        await self._refreshed()

    async def stopped(self, reason: str | None) -> None:
        self._group = self._returns = None
        for axon in list(self.axons.values()):
            await self._deregister(axon, reason)

    async def close_neurons(self) -> None:
        for axon in list(self.axons.values()):
            await axon.aclose()

    async def _deregister(self, axon: Axon, reason: str | None) -> None:
        payload: dict[str, Any] = {"reason": reason} if reason else {}
        sig = Signal(type=T.DEREGISTER, directed=Directed(axon.neuron_id), payload=payload)
        try:
            await self._core.publish(sig)
        except Exception:
            log.warning("could not publish DEREGISTER for %s", axon.neuron_id, exc_info=True)

    async def _sync_group(self) -> None:
        """Be in the queue group of exactly our capabilities (``caps:a,b``), or none."""
        caps = self.capabilities
        group = "caps:" + ",".join(caps) if caps else None
        if group == self._group or not self._core.running:
            return
        routed = self._core.subject(T.TASK, routed=True)
        if self._group is not None:
            await self._core.drop_group(routed, self._group)
            if self._returns is not None:
                await self._core.drop_group(self._returns, self._group)
        self._group = group
        self._returns = None
        if group is not None:
            await self._core.subscribe_group(routed, group, self._on_routed_task)
            returns = f"{routed}.g{hashlib.sha256(group.encode()).hexdigest()[:16]}"
            await self._core.subscribe_group(returns, group, self._on_routed_task)
            self._returns = returns

    # ------------------------------------------------------------------ routing
    def first_run(self, work_id: str) -> bool:
        """True the first time work *work_id* (a TASK's id, an award's) is to run here."""
        if self.seen.first(work_id):
            return True
        self._duplicate(work_id)
        return False

    def _duplicate(self, work_id: str) -> None:
        self._core.duplicate_tasks += 1
        log.debug("%s: %s was delivered again; not run twice", self._core.dendrite_id, work_id)

    async def _on_task(self, sig: Signal) -> None:
        if is_routed_task(sig):
            return  # a routed TASK is run from the queue group's copy
        axon = self._runnable_on(sig)
        if axon is not None and self.first_run(sig.id):
            if self._core.tasks_saturated:
                self.waited += 1
            await self._core.run_task(self.run, axon, sig)

    def _on_task_nowait(self, sig: Signal) -> bool:
        """``_on_task`` when a runner is free now; False (nothing done) when the TASK must wait."""
        if is_routed_task(sig):
            return True  # run from the queue group's copy
        axon = self._runnable_on(sig)
        if axon is None:
            return True
        if not self.seen.first(sig.id):  # delivered again: counted and not run twice, as _on_task does
            self._duplicate(sig.id)
            return True
        if not self._core.try_run_task(self.run, axon, sig):
            self.seen.forget(sig.id)  # nothing done (not even remembered): the pump's _on_task takes it
            return False
        return True

    async def _on_routed_task(self, sig: Signal) -> None:
        """The queue-group copy of a capability-routed TASK: run it if an Axon can (or hand it back)."""
        core = self._core
        if not core.running or sig.type is not T.TASK:
            return
        axon = self._runnable_on(sig)
        if axon is None:
            return
        if sig.id in self.seen:  # run here already (or running): neither run again nor handed back
            self._duplicate(sig.id)
            return
        if core.tasks_saturated:
            if await self._decline(sig):
                return  # handed back unrun: not remembered, so it may come back here
            self.waited += 1
        if self.first_run(sig.id):
            await core.run_task(self.run, axon, sig)

    async def _decline(self, sig: Signal) -> bool:
        """Hand a routed TASK back to its queue group; False when it has been handed back enough."""
        declines = sig.meta.get(DECLINES_KEY, 0)
        returns = self._returns
        if returns is None or not isinstance(declines, int) or declines >= MAX_DECLINES:
            return False
        with anyio.move_on_after(DECLINE_PUBLISH_TIMEOUT_S):  # cancellation-safe: nothing half-sent
            await self._core.publish_on(returns, sig.evolve(meta={**sig.meta, DECLINES_KEY: declines + 1}))
            self.declined += 1
            return True
        return False  # the bus would not take it now (our own buffer full, in-process): keep it

    def _runnable_on(self, task: Signal) -> Axon | None:
        """The Axon to run *task* on; None when its trace is STOPped (counted) or no Axon here takes it."""
        if task.trace_id in self._core.tombstones:
            self.refused_stopped += 1
            return None
        return self.select(task)

    def select(self, task: Signal) -> Axon | None:
        """Addressed → that id; routed → first Axon with every capability; open call → catch_all."""
        target = task.directed.id if task.directed is not None else None
        if target:
            return self.axons.get(target)
        caps = task.payload.get("capabilities")
        if caps:
            for axon in self.axons.values():
                if axon.serves(caps):
                    return axon
            return None
        for axon in self.axons.values():
            if axon.catch_all:
                return axon
        return None

    async def run(self, axon: Axon, task: Signal) -> None:
        """Run *task* on *axon* under its ``JobScope``, filed under its trace; publish the replies.

        On the task pool's runners that handle cancels the runner's scope (``job_scope``:
        entering a cancel scope per TASK costs as much as the rest of its hand-over on
        trio); anywhere else the TASK gets a scope of its own.
        """
        core = self._core
        trace = task.trace_id
        if trace in core.tombstones:
            self.refused_stopped += 1
            return  # STOPped while it waited for a runner
        handle = job_scope.get()
        if handle is None:
            await self._run_in_own_scope(axon, task)
            return
        core.file_scope(trace, handle)  # STOP cancels it
        token = current_task.set(task)
        try:
            ctx = NeuronContext(
                task,
                axon.neuron_id,
                # what the Neuron emits goes out only while its work is live (not
                # cancelled, not STOPped): a shielded cleanup or a thread is silenced
                publish=functools.partial(core.publish_in_scope, handle),
                entries=await axon.fetch_context(task) if axon.context_fetcher is not None else (),
                dendrite_id=core.dendrite_id,
                dendrite=self._context_host,
            )
            replies = await axon.run(task, ctx, check_cancelled=False)
            if handle.cancel_called or not core.running:
                # cancelled after the Neuron returned (a STOP, the Dendrite stopping): this
                # raises, so there is no reply; the first reply needs no other check, and a
                # STOP landing while it is published is checked before a FINAL
                await anyio.lowlevel.checkpoint_if_cancelled()
            if replies:
                if not core.publish_nowait(replies[0]):  # most often the bus takes it at once
                    await core.publish(replies[0])
                for reply in replies[1:]:
                    await core.publish_in_scope(handle, reply)
        except anyio.get_cancelled_exc_class():
            if not handle.cancel_called:
                raise  # not this TASK's cancellation (the Dendrite is stopping)
            # this TASK's own (STOP): over, as when a scope of its own exits; the runner
            # renews its scope before anything else awaits in it
            self._cancelled(axon, task)
        finally:
            current_task.reset(token)
            core.unfile_scope(trace, handle)

    async def _run_in_own_scope(self, axon: Axon, task: Signal) -> None:
        """``run`` outside the task pool's runners: a cancel scope and a handle of its own."""
        with self._core.prims.cancel_scope() as scope:
            handle = JobScope(scope)
            token = job_scope.set(handle)
            try:
                await self.run(axon, task)
            finally:
                job_scope.reset(token)
                handle.close()

    def _cancelled(self, axon: Axon, task: Signal) -> None:
        log.debug(
            "TASK %s on trace %s was cancelled",
            task.id,
            task.trace_id,
            extra=log_extra(task, neuron=axon.neuron_id),
        )

    async def _on_discover(self, sig: Signal) -> None:
        if self.axons and self._answers_discover():
            await self._core.run_job(self._answer_discover, sig)

    async def _answer_discover(self, sig: Signal) -> None:
        want_neuron = sig.payload.get("neuron")
        want_caps = sig.payload.get("capabilities") or []
        matches = [
            a
            for a in self.axons.values()
            if (not want_neuron or a.neuron_id == want_neuron) and a.serves(want_caps)
        ]
        if not matches:
            return
        await anyio.sleep(random.uniform(0, 0.1))  # allowed: spread the answers of many hosts
        for axon in matches:
            await self._core.publish(axon.register_signal())
