"""Sync callables made safe for the event loop: handlers, hooks and plain-function Neurons.

The Dendrite calls a plain handler inline on its loop; under the facade that
would let one slow handler stall every request.  So everything sync a facade
user registers is wrapped to run in the portal's worker threads, in a copy of
the calling task's context (``current_task`` included, so a Neuron that
dispatches from its thread gets the right ``parent_id``).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from cosmonapse.axon import Axon
from cosmonapse.context import NeuronContext
from cosmonapse.runners import is_async_callable
from cosmonapse.signal import Signal

from ._generated_context import NeuronContextTwins
from .portal import CURRENT_LOOP, PortalLoop
from .workers import run_in_worker

__all__ = ["SyncNeuronContext", "ThreadedNeuron", "adapt_axon", "to_async"]


def to_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """*fn* itself if it is async, else a coroutine function running it in a worker thread."""
    if is_async_callable(fn):
        return fn

    @functools.wraps(fn)
    async def in_worker_thread(*args: Any) -> Any:
        result = await run_in_worker(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    in_worker_thread.sync_fn = fn  # type: ignore[attr-defined]
    return in_worker_thread


class SyncNeuronContext(list[Any], NeuronContextTwins):
    """What a plain-function Neuron gets under the facade: ``NeuronContext`` with blocking emitters.

    ``cancelled`` is set when the TASK is cancelled (a STOP, a timeout, shutdown): a
    thread cannot be interrupted, so a long-running function should check it.
    """

    def __init__(self, context: NeuronContext, loop: PortalLoop) -> None:
        super().__init__(context)
        self.aio: NeuronContext = context
        self.cancelled: threading.Event = threading.Event()
        self._loop = loop

    @property
    def task(self) -> Signal:
        """The TASK being run."""
        return self.aio.task

    @property
    def neuron_id(self) -> str:
        return self.aio.neuron_id

    @property
    def dendrite_id(self) -> str | None:
        return self.aio.dendrite_id

    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._loop.call(_call_method, self.aio, name, args, kwargs, what=f"{name}()")

    def _read(self, name: str) -> Any:
        return getattr(self.aio, name)


async def _call_method(obj: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return await getattr(obj, name)(*args, **kwargs)


class ThreadedNeuron:
    """A plain-function Neuron run in the portal's worker threads, given a ``SyncNeuronContext``."""

    def __init__(self, fn: Callable[[dict[str, Any], Any], Any]) -> None:
        self.fn: Callable[[dict[str, Any], Any], Any] = fn
        self.__name__: str = getattr(fn, "__name__", type(fn).__name__)

    async def __call__(self, input: dict[str, Any], context: NeuronContext) -> Any:
        sync_context = SyncNeuronContext(context, CURRENT_LOOP.get())
        return await run_in_worker(self.fn, input, sync_context, on_cancel=sync_context.cancelled.set)

    async def aclose(self) -> None:
        closer = getattr(self.fn, "aclose", None)
        if closer is not None:
            await closer()

    def __repr__(self) -> str:
        return f"<ThreadedNeuron {self.fn!r}>"


def adapt_axon(axon: Axon) -> Axon:
    """*axon* itself if its Neuron is async, else a copy whose Neuron runs in worker threads."""
    if is_async_callable(axon.neuron_fn):
        return axon
    return attrs.evolve(axon, neuron_fn=ThreadedNeuron(axon.neuron_fn))
