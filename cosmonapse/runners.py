"""``RunnerPool``: bounded concurrency without a task spawn per job.

The Dendrite runs every inbound TASK and every handler call as a job in its own
task group.  Spawning a task per job is the largest cost on the hot path, so
jobs are handed to runner tasks that wait for work: a job goes straight to an
idle runner if there is one, else a new runner is started while fewer than
``limit`` exist, else ``submit`` waits for a runner to come free
(backpressure onto the bus).  Runners beyond ``max_idle`` (default: all of
them) retire when they run out of work; keeping them avoids re-spawning on
every burst, at a few KB per idle runner.  All runners live in the owner's
task group and end with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

__all__ = ["Job", "RunnerPool"]

log = logging.getLogger("cosmonapse.runners")

Job = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]


class RunnerPool:
    """At most ``limit`` jobs run at once, on reusable runner tasks in *tg*."""

    __slots__ = ("_receive", "_send", "_tg", "busy", "limit", "max_idle", "name", "runners")

    def __init__(
        self, tg: TaskGroup, limit: int, *, max_idle: int | None = None, name: str = "runner"
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._tg = tg
        self.limit = limit
        self.max_idle = limit if max_idle is None else max_idle
        self.name = name
        self.runners = 0
        self.busy = 0
        # No buffer: a send succeeds only by handing the job to a waiting runner.
        self._send, self._receive = anyio.create_memory_object_stream[Job](0)

    async def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` on a runner; waits while ``limit`` jobs are running."""
        job = (fn, args)
        try:
            self._send.send_nowait(job)
            return
        except anyio.WouldBlock:
            pass
        if self.runners < self.limit:
            self.runners += 1
            try:
                self._tg.start_soon(self._runner, job, name=self.name)
            except BaseException:
                self.runners -= 1
                raise
            return
        await self._send.send(job)

    async def _runner(self, job: Job) -> None:
        try:
            while True:
                fn, args = job
                self.busy += 1
                try:
                    await fn(*args)
                except Exception:
                    log.exception("%s job %r raised", self.name, fn)
                finally:
                    self.busy -= 1
                if self.runners - self.busy > self.max_idle:
                    return
                try:
                    job = await self._receive.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return  # the pool was closed: the owner is stopping
        finally:
            self.runners -= 1

    def close(self) -> None:
        """Refuse new jobs; idle runners end (the rest end with the task group)."""
        self._send.close()
        self._receive.close()
