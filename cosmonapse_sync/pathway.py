"""``SyncPathway``: a Pathway read from blocking code (``for sig in pathway``, ``wait``, ``with``).

It belongs to the portal loop that opened it: after ``close()`` of the facade or
in a forked child its reads raise ``FacadeClosedError`` (and ``close()`` is a
no-op), because the async Pathway it wraps lives on a loop that is gone.
``wait`` and ``wait_for`` are generated twins of the async ones
(``_generated_pathway``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import anyio

from cosmonapse.dendrite import Dendrite
from cosmonapse.errors import PathwayTimeout
from cosmonapse.pathway import Pathway, PathwayRole, PathwayScope
from cosmonapse.signal import Signal, SignalType
from cosmonapse.telemetry import log_extra

from ._generated_pathway import PathwayTwins
from .adapt import to_async
from .portal import CURRENT_LOOP, PortalLoop

__all__ = ["SyncPathway", "confirm_stop"]

log: logging.Logger = logging.getLogger("cosmonapse_sync.pathway")

_END = object()
C = TypeVar("C", bound=Callable[[Signal], Any])


async def confirm_stop(dendrite: Dendrite, trace_id: str, reason: str, ack_timeout_s: float) -> None:
    """STOP *trace_id* and wait, shielded and bounded, for the first STOPPED; never raises.

    The first ack means a node that had a stake (the TASK's host) cancelled its work.
    """
    with anyio.CancelScope(shield=True):
        try:
            with anyio.move_on_after(ack_timeout_s):
                await dendrite.stop_and_confirm(trace_id, reason=reason, timeout_s=ack_timeout_s)
        except Exception:
            log.warning(
                "could not publish STOP for trace %s", trace_id, exc_info=True,
                extra=log_extra(trace_id=trace_id),
            )  # fmt: skip


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


async def _stop_on_loop(trace_id: str, reason: str, ack_timeout_s: float) -> None:
    await confirm_stop(CURRENT_LOOP.get().value, trace_id, reason, ack_timeout_s)


class SyncPathway(PathwayTwins):
    """One trace seen from a ``SyncDendrite``; ``aio`` is the async Pathway underneath."""

    __slots__ = ("_ack_timeout_s", "_loop", "aio")

    def __init__(self, pathway: Pathway, loop: PortalLoop, stop_ack_timeout_s: float = 1.0) -> None:
        self.aio: Pathway = pathway
        self._loop = loop
        self._ack_timeout_s = stop_ack_timeout_s

    def __repr__(self) -> str:
        return f"<Sync{self.aio!r}>"

    @property
    def trace_id(self) -> str:
        """The trace this Pathway reads."""
        return self.aio.trace_id

    @property
    def task(self) -> Signal | None:
        """The TASK this originator dispatched (None: observer)."""
        return self.aio.task

    @property
    def role(self) -> PathwayRole:
        return self.aio.role

    @property
    def scope(self) -> PathwayScope:
        return self.aio.scope

    @property
    def closed(self) -> bool:
        """True once FINAL/ERROR arrived or ``close()`` was called (buffered Signals stay readable)."""
        return self.aio.closed

    @property
    def dropped(self) -> int:
        """Signals dropped on buffer overflow."""
        return self.aio.dropped

    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._loop.call(_call_method, self.aio, name, args, kwargs, what=f"Pathway.{name}()")

    def _read(self, name: str) -> Any:
        return getattr(self.aio, name)

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

    def on(self, signal_type: SignalType) -> Callable[[C], C]:
        """Decorator: call the function for every *signal_type* on this trace (sync: in a worker thread)."""

        def register(fn: C) -> C:
            self._loop.run_sync(self.aio.on(signal_type), to_async(fn), what="Pathway.on()")
            return fn

        return register

    def __iter__(self) -> Iterator[Signal]:
        return self

    def __next__(self) -> Signal:
        sig = self._loop.call(_next, self.aio, None, what="next(pathway)")
        if sig is _END:
            raise StopIteration
        return sig  # type: ignore[no-any-return]

    def signals(self, idle_timeout_s: float | None = None) -> Iterator[Signal]:
        """Iterate until the Pathway closes; ``PathwayTimeout`` if nothing arrives for ``idle_timeout_s``."""
        while True:
            sig = self._loop.call(_next, self.aio, idle_timeout_s, what="Pathway.signals()")
            if sig is _END:
                return
            yield sig

    def stop(self, reason: str = "stopped by the caller") -> None:
        """Publish a STOP for this trace (its TASKs are cancelled wherever they run) and close."""
        self._loop.call(_stop_on_loop, self.trace_id, reason, self._ack_timeout_s, what="Pathway.stop()")
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
