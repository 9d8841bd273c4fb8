"""Callbacks that are not Signals: ``on_connect``, ``on_refresh`` and ``on_schedule`` timers.

``LifecycleHooks`` is the decorator surface (the seed's base class of the
Dendrite; the sync facade has it too).  ``Hooks`` is the Dendrite's service
behind it: every hook runs as a job in the core's bounded pool — connect hooks
after each start and reconnect, refresh hooks after each heartbeat round and
registry change, schedules from the core's one clock task (a run never
overlaps the previous one of the same hook).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from .core import Core, Service

__all__ = ["HookFn", "HookKind", "Hooks", "LifecycleHooks"]

log: logging.Logger = logging.getLogger("cosmonapse.lifecycle")

HookFn = Callable[[], Awaitable[Any] | Any]
F = TypeVar("F", bound=HookFn)
HookKind = Literal["connect", "refresh", "schedule"]


class LifecycleHooks:
    """``on_connect`` (after REGISTER), ``on_refresh`` (each heartbeat/register/deregister),
    ``on_schedule(every_s=)`` (a periodic function run while the owner runs)."""

    def _add_hook(self, kind: HookKind, fn: HookFn, every_s: float | None) -> None:
        raise NotImplementedError  # pragma: no cover - each owner files hooks its own way

    def on_connect(self, fn: F) -> F:
        """Call *fn* once this Dendrite has registered (after each start and reconnect)."""
        self._add_hook("connect", fn, None)
        return fn

    def on_refresh(self, fn: F) -> F:
        """Call *fn* after each heartbeat round and each register/deregister."""
        self._add_hook("refresh", fn, None)
        return fn

    def on_schedule(self, *, every_s: float) -> Callable[[F], F]:
        """Call the decorated function every *every_s* seconds while running."""
        if every_s <= 0:
            raise ValueError("every_s must be > 0")

        def register(fn: F) -> F:
            self._add_hook("schedule", fn, float(every_s))
            return fn

        return register


class Hooks(Service):
    """The Dendrite's hooks, run as jobs of the core."""

    def __init__(self, core: Core, announce: Callable[[], Awaitable[None]]) -> None:
        self._core = core
        self._announce = announce  # re-REGISTER after a reconnect
        self.connect: list[HookFn] = []
        self.refresh: list[HookFn] = []
        self.schedules: list[tuple[float, HookFn]] = []

    def add(self, kind: HookKind, fn: HookFn, every_s: float | None) -> None:
        if kind == "connect":
            self.connect.append(fn)
        elif kind == "refresh":
            self.refresh.append(fn)
        else:
            assert every_s is not None
            self.schedules.append((every_s, fn))
            if self._core.running:
                self._schedule(every_s, fn)

    def _schedule(self, every_s: float, fn: HookFn) -> None:
        async def tick() -> None:
            await _run_hook(fn)

        self._core.clock.add(every_s, tick, name=f"schedule:{fn!r}")

    async def start(self) -> None:
        self._core.synapse.add_reconnect_callback(self._on_reconnected)

    async def announce(self) -> None:
        for every_s, fn in self.schedules:
            self._schedule(every_s, fn)
        await self.fire_connect()

    async def stopped(self, reason: str | None) -> None:
        self._core.synapse.remove_reconnect_callback(self._on_reconnected)

    async def fire_connect(self) -> None:
        for hook in self.connect:
            await self._core.run_job(_run_hook, hook)

    async def fire_refresh(self) -> None:
        for hook in self.refresh:
            await self._core.run_job(_run_hook, hook)

    def _on_reconnected(self) -> None:
        """Synapse callback (sync): re-announce from the core's control loop."""
        self._core.soon(self._reannounce)

    async def _reannounce(self) -> None:
        await self._announce()
        await self.fire_connect()


async def _run_hook(hook: HookFn) -> None:
    try:
        result = hook()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("lifecycle hook %r raised", hook)
