"""``LoopBridge``: drive one event loop, on asyncio or trio, from synchronous code — with virtual time.

Hypothesis's state machines are synchronous; the code under test is not.  A
bridge owns one event loop in its own thread for the life of one example (a
blocking portal) and runs each step on it:

* :meth:`call` runs a coroutine function to completion on the loop, then lets
  every task run until all are blocked again (:meth:`settle`), so a step's
  consequences have all happened before the next step is chosen;
* time is **virtual** and frozen between steps: it only moves in
  :meth:`advance` (timers fire in deadline order, the loop settles after each)
  or while a step runs with ``autojump=True`` (time jumps to the next timer
  whenever everything is blocked, so a ``sleep(30)`` takes no real time).
  trio uses its ``MockClock``; asyncio a selector loop whose ``time()`` is
  virtual.  A step therefore behaves the same on every run: timeouts fire
  because the machine said so, not because the machine was slow;
* on trio, the scheduler is made deterministic and seeded by Hypothesis (as
  pytest-trio does), so an example replays exactly.

Every step also has a *real-time* limit (``step_timeout_s``): a step that
never finishes is reported as such instead of hanging the test run.
Work running in threads (``anyio.to_thread``, sync Neurons) is outside the
virtual clock and makes examples timing-dependent; prefer async Neurons.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
import anyio.from_thread

__all__ = ["LoopBridge", "StepTimeout", "VirtualClockLoop"]

T = TypeVar("T")

_MAX_ROUNDS = 100_000


class StepTimeout(AssertionError):
    """A step did not finish within its real-time limit (something hangs)."""


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock only moves when told (``jump``); it tracks its timers."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0
        self._timers: list[tuple[float, int, asyncio.TimerHandle]] = []
        self._timer_seq = 0

    def time(self) -> float:
        return self._virtual_now

    def jump(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._virtual_now += seconds

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, handle))
        return handle

    def next_deadline(self) -> float:
        """Virtual time of the next pending timer (``inf`` if none).

        Called once the loop has settled, when every timer due by now has run.
        """
        timers = self._timers
        while timers and (timers[0][2].cancelled() or timers[0][0] <= self._virtual_now):
            heapq.heappop(timers)
        return timers[0][0] if timers else math.inf


def _make_deterministic_trio() -> None:
    """What pytest-trio does under Hypothesis: seeded, ordered scheduling batches."""
    try:
        import trio._core._run as trio_run
        from hypothesis import register_random
    except ImportError:  # pragma: no cover - trio or hypothesis missing
        return
    register_random(trio_run._r)  # type: ignore[attr-defined]
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[attr-defined]


class LoopBridge:
    """One event loop (asyncio or trio) in a thread, with a virtual clock, driven step by step."""

    def __init__(self, backend: str = "trio", *, step_timeout_s: float = 30.0) -> None:
        if backend not in ("asyncio", "trio"):
            raise ValueError(f"backend must be 'asyncio' or 'trio', not {backend!r}")
        self.backend = backend
        self.step_timeout_s = step_timeout_s
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._trio_clock: Any = None
        self._loop: VirtualClockLoop | None = None

    # -- life cycle --------------------------------------------------------------
    def start(self) -> LoopBridge:
        options: dict[str, Any]
        if self.backend == "trio":
            import trio.testing

            _make_deterministic_trio()
            self._trio_clock = trio.testing.MockClock()
            options = {"clock": self._trio_clock}
        else:

            def factory() -> VirtualClockLoop:
                self._loop = VirtualClockLoop()
                return self._loop

            options = {"loop_factory": factory}
        # allowed: the example's loop thread, stopped and joined by close()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend, options, name="loop-bridge")
        self._portal = self._portal_cm.__enter__()
        return self

    def close(self) -> None:
        """Stop the loop; tasks still running are cancelled; the thread is joined."""
        cm, portal = self._portal_cm, self._portal
        self._portal_cm = self._portal = None
        if cm is not None and portal is not None:
            try:
                portal.call(portal.stop, True)  # cancel what still runs
            except RuntimeError:  # the loop is already gone
                pass
            cm.__exit__(None, None, None)

    def __enter__(self) -> LoopBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def portal(self) -> anyio.from_thread.BlockingPortal:
        if self._portal is None:
            raise RuntimeError("the LoopBridge is not started")
        return self._portal

    # -- steps -------------------------------------------------------------------
    def call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, autojump: bool = False, what: str | None = None
    ) -> T:
        """Run ``await fn(*args)`` on the loop, then settle; with *autojump* time moves as needed."""
        return self._run(self._step, fn, args, autojump, what=what or getattr(fn, "__name__", repr(fn)))

    def settle(self) -> None:
        """Let every task run until all are blocked (time does not move)."""
        self._run(self._settle, what="settle")

    def advance(self, seconds: float) -> None:
        """Move virtual time *seconds* forward, firing timers in order and settling after each."""
        self._run(self._advance, seconds, what=f"advance({seconds:g})")

    def now(self) -> float:
        """The loop's virtual time."""
        return self._run(self._now, what="now")

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> concurrent.futures.Future[Any]:
        """Start ``fn(*args)`` as a task of the bridge (it runs while steps settle or advance)."""
        return self.portal.start_task_soon(fn, *args)  # type: ignore[arg-type]

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, what: str) -> T:
        future = self.portal.start_task_soon(fn, *args)  # type: ignore[arg-type]
        # Not future.result(timeout=): the step's own TimeoutError must not pass for ours.
        concurrent.futures.wait([future], timeout=self.step_timeout_s)
        if future.done():
            return future.result()
        future.cancel()
        raise StepTimeout(
            f"step {what!r} did not finish within {self.step_timeout_s:g} s of real time "
            f"(virtual time is frozen between steps: does it wait for something that never comes?)"
        ) from None

    # -- on the loop -------------------------------------------------------------
    async def _now(self) -> float:
        return anyio.current_time()

    async def _step(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], autojump: bool) -> T:
        if not autojump:
            result = await fn(*args)
            await self._settle()
            return result
        outcome: list[Any] = []
        done = anyio.Event()

        async def run() -> None:
            try:
                outcome.append(("ok", await fn(*args)))
            except BaseException as exc:
                outcome.append(("err", exc))
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            for _ in range(_MAX_ROUNDS):
                await self._settle()
                if done.is_set():
                    break
                nxt = self._next_deadline()
                if math.isinf(nxt):
                    await done.wait()  # only threads can make progress now
                    break
                self._jump(max(0.0, nxt - anyio.current_time()))
        kind, value = outcome[0]
        if kind == "err":
            raise value
        await self._settle()
        return value

    async def _advance(self, seconds: float) -> None:
        target = anyio.current_time() + seconds
        for _ in range(_MAX_ROUNDS):
            await self._settle()
            now = anyio.current_time()
            nxt = self._next_deadline()
            if nxt > target:
                self._jump(max(0.0, target - now))
                await self._settle()
                return
            self._jump(max(0.0, nxt - now))
        raise RuntimeError(f"advance({seconds:g}) fired more than {_MAX_ROUNDS} timers")

    def _next_deadline(self) -> float:
        if self._trio_clock is not None:
            import trio

            return trio.current_time() + trio.lowlevel.current_statistics().seconds_to_next_deadline
        assert self._loop is not None
        return self._loop.next_deadline()

    def _jump(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._trio_clock is not None:
            self._trio_clock.jump(seconds)
        else:
            assert self._loop is not None
            self._loop.jump(seconds)

    async def _settle(self) -> None:
        if self._trio_clock is not None:
            import trio.testing

            await trio.testing.wait_all_tasks_blocked()
            return
        await _settle_asyncio()


async def _settle_asyncio() -> None:
    """Yield until every other task waits on an unfinished future and no callback is ready."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    quiet = 0
    for _ in range(_MAX_ROUNDS):
        await asyncio.sleep(0)
        busy = len(getattr(loop, "_ready", ())) > 0
        if not busy:
            for task in asyncio.all_tasks(loop):
                if task is me or task.done():
                    continue
                waiter = getattr(task, "_fut_waiter", None)
                if waiter is None or waiter.done():
                    busy = True
                    break
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return
    raise RuntimeError("the event loop never settled (a task keeps running without blocking)")
