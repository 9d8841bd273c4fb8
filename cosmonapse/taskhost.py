"""``TaskHost``: a task group owned by a resource, not by the task that opened it.

The seeds offer ``connect()``/``close()`` and ``start()``/``stop()`` as plain
calls, and users make them from different tasks: a pytest-asyncio fixture, an
ASGI lifespan split into startup and shutdown hooks, a ``fail_after`` around
``connect_synapse``.  A task group entered inside ``connect()`` belongs to the
calling task and its cancel scopes, so any of those breaks it.

A ``TaskHost`` instead spawns one *root task* per resource on the running event
loop.  The root task opens the resource's task group and waits for ``aclose()``;
every background task of the resource lives in that group.  So the tree stays
structured, one level down: each task has one owner (the group), the group has
one owner (the root task) and the resource joins the root task when it closes.

A failure in a background task is never lost: it ends the group, is logged once
at ERROR, and is raised (as ``TaskHostFailed``) by the next ``check()`` and by
``aclose()``.

The root task is the one place where a task is started outside a task group:
on asyncio with ``loop.create_task`` and on trio as a system task (trio's own
way to run a task that no user nursery owns).  Both are joined by ``aclose()``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskGroup

from .errors import CosmonapseError

__all__ = ["TaskHost", "TaskHostClosed", "TaskHostFailed"]

log: logging.Logger = logging.getLogger("cosmonapse.taskhost")

AsyncFn = Callable[..., Coroutine[Any, Any, Any]]


class TaskHostClosed(CosmonapseError, RuntimeError):
    """The resource's task group is not open (never opened, closing or closed)."""


class TaskHostFailed(CosmonapseError, RuntimeError):
    """A background task of the resource raised; ``__cause__`` is what it raised."""


class TaskHost:
    """One root task hosting one task group, opened and closed from any task.

    ``open()`` returns once the group is open; ``start_soon``/``start`` put work
    in it from any task of the same event loop; ``aclose()`` cancels the group,
    joins the root task (bounded by *timeout_s*) and re-raises a background failure.
    """

    __slots__ = ("_closing", "_done", "_failure", "_name", "_on_failure", "_reported", "_root", "_tg")

    def __init__(self, name: str, *, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """*on_failure* (sync, quick) is called in the root task right after a background failure."""
        self._name = name
        self._on_failure = on_failure
        self._tg: TaskGroup | None = None
        self._closing: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._reported = False
        self._root: Any = None  # the asyncio Task, kept so it is not garbage-collected

    # ------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        """True while the group accepts work (opened, not closing, not failed)."""
        return self._tg is not None and self._closing is not None and not self._closing.is_set()

    @property
    def failure(self) -> BaseException | None:
        """What a background task raised, if one did."""
        return self._failure

    def check(self) -> None:
        """Raise ``TaskHostFailed`` if a background task failed, ``TaskHostClosed`` if not open."""
        if self._failure is not None:
            raise TaskHostFailed(f"{self._name}: a background task failed: {self._failure!r}") from (
                self._failure
            )
        if not self.is_open:
            raise TaskHostClosed(f"{self._name} is not running")

    @property
    def task_group(self) -> TaskGroup:
        """The hosted group; ``TaskHostClosed``/``TaskHostFailed`` when it cannot take work."""
        self.check()
        assert self._tg is not None
        return self._tg

    # ------------------------------------------------------------ life cycle
    async def open(self) -> None:
        """Spawn the root task and return once its task group is open."""
        if self._done is not None:
            raise TaskHostClosed(f"{self._name} was already opened (a TaskHost is opened once)")
        ready = anyio.Event()
        self._closing = anyio.Event()
        self._done = anyio.Event()
        self._spawn_root(ready)
        with anyio.CancelScope(shield=True):
            await ready.wait()  # the root sets it first thing; never blocks on user code
        self.check()

    def _spawn_root(self, ready: anyio.Event) -> None:
        backend = sniffio.current_async_library()
        context = contextvars.copy_context()
        if backend == "trio":
            import trio

            trio.lowlevel.spawn_system_task(  # allowed: a resource's root task, joined by aclose()
                self._root_main, ready, name=f"root:{self._name}", context=context
            )
        else:
            import asyncio

            loop = asyncio.get_running_loop()
            self._root = loop.create_task(  # allowed: a resource's root task, joined by aclose()
                self._root_main(ready), name=f"root:{self._name}", context=context
            )

    async def _root_main(self, ready: anyio.Event) -> None:
        closing, done = self._closing, self._done
        assert closing is not None and done is not None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                ready.set()
                await closing.wait()
                tg.cancel_scope.cancel()
        except BaseException as exc:  # a root task must not crash the event loop
            if isinstance(exc, anyio.get_cancelled_exc_class()) and not self._failure:
                # The loop itself is shutting down (asyncio.run's clean-up, trio's end of run).
                self._tg = None
                ready.set()
                done.set()
                raise
            self._failure = _unwrap(exc)
            log.error("%s: a background task failed", self._name, exc_info=self._failure)
            if self._on_failure is not None:
                try:
                    self._on_failure(self._failure)
                except Exception:
                    log.exception("%s: the on_failure callback raised", self._name)
        finally:
            self._tg = None
            ready.set()
            done.set()

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Cancel the group, join the root task; raise a background failure once.

        Idempotent.  With *timeout_s*, waits at most that long for the children to
        end (a child that ignores cancellation is then left to the event loop and
        logged); the join is shielded, so closing from a cancelled task still joins.
        """
        closing, done = self._closing, self._done
        if closing is None or done is None:
            return
        closing.set()
        with anyio.CancelScope(shield=True):
            if timeout_s is None:
                await done.wait()
            else:
                with anyio.move_on_after(timeout_s):
                    await done.wait()
                if not done.is_set():
                    log.error("%s: background tasks did not end within %s s of close", self._name, timeout_s)
        if self._failure is not None and not self._reported:
            self._reported = True
            raise TaskHostFailed(f"{self._name}: a background task failed: {self._failure!r}") from (
                self._failure
            )

    async def wait_ended(self) -> None:
        """Wait until the root task has ended (closed, failed, or the loop shut down)."""
        if self._done is None:
            raise TaskHostClosed(f"{self._name} was never opened")
        await self._done.wait()

    # ------------------------------------------------------------ work
    def start_soon(self, fn: AsyncFn, *args: Any, name: object = None) -> None:
        """Start ``fn(*args)`` in the group; ``TaskHostClosed`` if it is not open."""
        self.task_group.start_soon(fn, *args, name=name)

    async def start(self, fn: AsyncFn, *args: Any, name: object = None) -> Any:
        """Start ``fn(*args, task_status=...)`` in the group and return what it reports as started."""
        return await self.task_group.start(fn, *args, name=name)


def _unwrap(exc: BaseException) -> BaseException:
    """A lone exception out of a task-group exception group is reported as itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
