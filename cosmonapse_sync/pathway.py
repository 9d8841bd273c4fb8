"""``SyncPathway``: a Pathway read from blocking code (``for sig in pathway``, ``wait``, ``with``).

It belongs to the portal loop that opened it: after ``close()`` of the facade or
in a forked child its reads raise ``FacadeClosedError`` (and ``close()`` is a
no-op), because the async Pathway it wraps lives on a loop that is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from cosmonapse.errors import PathwayTimeout
from cosmonapse.pathway import Pathway
from cosmonapse.signal import Signal, SignalType

from .adapt import to_async
from .portal import PortalLoop
from .wrapping import install_sync_methods

if TYPE_CHECKING:
    from .facade import SyncDendrite

__all__ = ["SyncPathway"]

_END = object()


async def _next(pathway: Pathway, idle_timeout_s: float | None) -> Any:
    try:
        with anyio.fail_after(idle_timeout_s):
            return await pathway.__anext__()
    except StopAsyncIteration:
        return _END
    except TimeoutError:
        raise PathwayTimeout(f"no Signal on trace {pathway.trace_id} within {idle_timeout_s} s") from None


async def _call_method(obj: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return await getattr(obj, name)(*args, **kwargs)


class SyncPathway:
    """One trace seen from a ``SyncDendrite``; ``aio`` is the async Pathway underneath."""

    __slots__ = ("_facade", "_loop", "aio")

    def __init__(self, pathway: Pathway, loop: PortalLoop, facade: SyncDendrite | None = None) -> None:
        self.aio = pathway
        self._loop = loop
        self._facade = facade

    def __repr__(self) -> str:
        return f"<Sync{self.aio!r}>"

    trace_id = property(lambda self: self.aio.trace_id, doc="The trace this Pathway reads.")
    task = property(lambda self: self.aio.task, doc="The TASK this originator dispatched (None: observer).")
    role = property(lambda self: self.aio.role)
    scope = property(lambda self: self.aio.scope)
    closed = property(lambda self: self.aio.closed)
    dropped = property(lambda self: self.aio.dropped, doc="Signals dropped on buffer overflow.")

    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._loop.call(_call_method, self.aio, name, args, kwargs, what=f"Pathway.{name}()")

    # wait() and wait_for() are generated from Pathway below.

    def close(self) -> None:
        """Stop receiving; idempotent, and a no-op once the portal it belongs to is gone."""
        loop = self._loop
        if loop.finished or loop.closing or self.aio.closed:
            return
        try:
            loop.call(_call_method, self.aio, "close", (), {}, what="Pathway.close()")
        except Exception:
            if not loop.finished:
                raise

    def on(self, signal_type: SignalType) -> Callable[[Callable[[Signal], Any]], Callable[[Signal], Any]]:
        """Decorator: call the function for every *signal_type* on this trace (sync: in a worker thread)."""

        def register(fn: Callable[[Signal], Any]) -> Callable[[Signal], Any]:
            self._loop.run_sync(self.aio.on(signal_type), to_async(fn), what="Pathway.on()")
            return fn

        return register

    def __iter__(self) -> Iterator[Signal]:
        return self

    def __next__(self) -> Signal:
        sig = self._loop.call(_next, self.aio, None, what="next(pathway)")
        if sig is _END:
            raise StopIteration
        return sig

    def signals(self, idle_timeout_s: float | None = None) -> Iterator[Signal]:
        """Iterate until the Pathway closes; ``PathwayTimeout`` if nothing arrives for ``idle_timeout_s``."""
        while True:
            sig = self._loop.call(_next, self.aio, idle_timeout_s, what="Pathway.signals()")
            if sig is _END:
                return
            yield sig

    def stop(self, reason: str = "stopped by the caller") -> None:
        """Publish a STOP for this trace (its TASKs are cancelled wherever they run) and close."""
        if self._facade is None:
            raise RuntimeError("this SyncPathway has no facade to publish a STOP through")
        self._facade._stop_trace_blocking(self._loop, self.trace_id, reason)
        self.close()

    def __enter__(self) -> SyncPathway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


install_sync_methods(SyncPathway, Pathway, lambda self, n, a, k: self._invoke(n, a, k))
