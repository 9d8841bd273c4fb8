"""``LifecycleHooks``: callbacks that are not Signals — connect, refresh and timers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["HookFn", "LifecycleHooks"]

HookFn = Callable[[], Awaitable[Any] | Any]
F = TypeVar("F", bound=HookFn)


class LifecycleHooks:
    """``on_connect`` (after REGISTER), ``on_refresh`` (each heartbeat/register/deregister),
    ``on_schedule(every_s=)`` (a periodic coroutine run in the owner's task group)."""

    def __init__(self) -> None:
        self._connect_hooks: list[HookFn] = []
        self._refresh_hooks: list[HookFn] = []
        self._schedules: list[tuple[float, HookFn]] = []

    def on_connect(self, fn: F) -> F:
        """Call *fn* once this Dendrite has registered (after each start and reconnect)."""
        self._connect_hooks.append(fn)
        return fn

    def on_refresh(self, fn: F) -> F:
        """Call *fn* after each heartbeat round and each register/deregister."""
        self._refresh_hooks.append(fn)
        return fn

    def on_schedule(self, *, every_s: float) -> Callable[[F], F]:
        """Call the decorated function every *every_s* seconds while running."""
        if every_s <= 0:
            raise ValueError("every_s must be > 0")

        def register(fn: F) -> F:
            self._schedules.append((float(every_s), fn))
            self._schedule_added(float(every_s), fn)
            return fn

        return register

    def _schedule_added(self, every_s: float, fn: HookFn) -> None:
        """Hook for a running owner to start the new schedule now."""
