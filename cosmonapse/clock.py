"""``Clock``: every periodic job of a resource served by one task.

A Dendrite has several timers — heartbeats, the registry's liveness sweep,
each ``on_schedule`` hook — and a user may add one while it runs.  One task
per timer would mean spawning from wherever ``on_schedule`` is called; here a
timer is an entry in a table and one task (``run``) sleeps until the earliest
is due, then hands each due job to ``launch`` (the owner's bounded pool, say).

A job never overlaps itself: while one run of it is still going its next tick
is skipped, and the tick after that is measured from when it was due, not when
it ran (no drift, no burst of catch-up runs).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["Clock", "Tick"]

log: logging.Logger = logging.getLogger("cosmonapse.clock")

Launch = Callable[[Callable[[], Awaitable[Any]]], Awaitable[None]]


class Tick:
    """One periodic job: ``fn`` every ``every_s`` seconds."""

    __slots__ = ("busy", "due", "every_s", "fn", "name")

    def __init__(self, every_s: float, fn: Callable[[], Awaitable[Any]], name: str) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be > 0")
        self.every_s: float = float(every_s)
        self.fn: Callable[[], Awaitable[Any]] = fn
        self.name: str = name
        self.due: float = 0.0
        self.busy: bool = False

    async def run_once(self) -> None:
        """Run the job once; the tick is free again when it ends."""
        try:
            await self.fn()
        finally:
            self.busy = False


class Clock:
    """Periodic jobs; ``add`` from any code of the loop, ``run`` in one task."""

    __slots__ = ("_launch", "_started", "_ticks", "_wake")

    def __init__(self, launch: Launch) -> None:
        self._launch = launch
        self._ticks: list[Tick] = []
        self._wake: anyio.Event | None = None  # made by run(): no event loop is needed before
        self._started = False

    def __len__(self) -> int:
        return len(self._ticks)

    def add(self, every_s: float, fn: Callable[[], Awaitable[Any]], name: str = "tick") -> Tick:
        """Run ``fn`` every *every_s* seconds, the first time *every_s* from now (or from ``run``)."""
        tick = Tick(every_s, fn, name)
        if self._started and self._wake is not None:
            tick.due = anyio.current_time() + tick.every_s
            self._wake.set()
        self._ticks.append(tick)
        return tick

    def clear(self) -> None:
        """Forget every job (the owner stopped; its services add theirs again at the next start)."""
        self._ticks.clear()

    def remove(self, tick: Tick) -> None:
        if tick in self._ticks:
            self._ticks.remove(tick)

    async def run(self) -> None:
        """Launch due jobs until cancelled."""
        now = anyio.current_time()
        for tick in self._ticks:
            tick.due = now + tick.every_s
            tick.busy = False
        self._wake = anyio.Event()
        self._started = True
        try:
            await self._serve()
        finally:
            self._started = False
            self._wake = None

    async def _serve(self) -> None:
        while True:
            now = anyio.current_time()
            for tick in list(self._ticks):
                if tick.due > now:
                    continue
                tick.due += tick.every_s * max(1, int((now - tick.due) // tick.every_s) + 1)
                if tick.busy:
                    log.debug("%s is still running: tick skipped", tick.name)
                    continue
                tick.busy = True
                try:
                    await self._launch(tick.run_once)
                except BaseException:
                    tick.busy = False
                    raise
            nearest = min((t.due for t in self._ticks), default=None)
            wake = self._wake = anyio.Event()
            if nearest is None:
                await wake.wait()
            else:
                with anyio.move_on_after(max(0.0, nearest - anyio.current_time())):
                    await wake.wait()
