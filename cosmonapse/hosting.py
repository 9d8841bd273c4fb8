"""``AxonHosting``: the service that hosts Axons — announce, route TASKs to them, run them.

* TASKs addressed to a hosted neuron id, open calls (to a ``catch_all`` Axon)
  and capability-routed TASKs (taken from the ``caps:<sorted capabilities>``
  queue group, so one host of a group runs each) go to the core's task pool;
  each runs in a cancel scope filed under its trace, which STOP cancels.
* REGISTER for each Axon at start (and after a reconnect, and with each
  heartbeat when ``reregister_on_heartbeat``), HEARTBEAT every ``heartbeat_s``,
  DEREGISTER at stop; DISCOVER is answered with REGISTERs.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from .axon import Axon
from .context import NeuronContext, current_task
from .core import Core, Route, Service
from .errors import DendriteProtocolError
from .signal import Directed, Signal, SignalType
from .telemetry import log_extra

__all__ = ["AxonHosting", "is_routed_task"]

log: logging.Logger = logging.getLogger("cosmonapse.hosting")
T = SignalType


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

    # ------------------------------------------------------------------ declarations
    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return ((T.TASK, self._on_task), (T.DISCOVER, self._on_discover))

    def wanted(self) -> Iterable[SignalType]:
        return (T.TASK, T.DISCOVER) if self.axons else ()

    @property
    def capabilities(self) -> list[str]:
        return sorted({c for a in self.axons.values() for c in a.capabilities})

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
        self._group = None
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
        self._group = group
        if group is not None:
            await self._core.subscribe_group(routed, group, self._on_routed_task)

    # ------------------------------------------------------------------ routing
    async def _on_task(self, sig: Signal) -> None:
        if is_routed_task(sig) or sig.trace_id in self._core.tombstones:
            return  # a routed TASK is run from the queue group's copy
        axon = self.select(sig)
        if axon is not None:
            await self._core.run_task(self.run, axon, sig)

    async def _on_routed_task(self, sig: Signal) -> None:
        """The queue-group copy of a capability-routed TASK: run it if an Axon can."""
        core = self._core
        if not core.running or sig.type is not T.TASK or sig.trace_id in core.tombstones:
            return
        axon = self.select(sig)
        if axon is not None:
            await core.run_task(self.run, axon, sig)

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
        """Run *task* on *axon* in its trace's cancel scope; publish the replies."""
        core = self._core
        trace = task.trace_id
        if trace in core.tombstones:
            return  # STOPped while it waited for a runner
        scope = anyio.CancelScope()
        core.file_scope(trace, scope)  # STOP cancels it
        try:
            with scope:
                token = current_task.set(task)
                try:
                    ctx = NeuronContext(
                        task,
                        axon.neuron_id,
                        publish=core.publish,
                        entries=await axon.fetch_context(task),
                        dendrite_id=core.dendrite_id,
                        dendrite=self._context_host,
                    )
                    for reply in await axon.run(task, ctx):
                        await core.publish(reply)
                finally:
                    current_task.reset(token)
        finally:
            core.unfile_scope(trace, scope)
        if scope.cancelled_caught:
            log.debug(
                "TASK %s on trace %s was cancelled",
                task.id,
                trace,
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
