"""On asyncio the buses handle what arrives in the transport's read callback (``aiostream.read_inline``).

Seen from outside, a Signal is then filed without any task running: the
subscription's synchronous path (``Subscription.fast``) and the dev bus server's
``on_publish`` hook run with no current task.  When the fast path refuses, the
Signal still reaches the handler through the pump, in order; and on trio (no
protocol API) the reader task files everything, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import pytest
from nats_util import NatsServer

from cosmonapse import DevSynapse, Signal, SignalType
from cosmonapse.synapse.base import Synapse
from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.synapse.nats import NatsSynapse

pytestmark = pytest.mark.anyio

SUBJECT = "cosmonapse.inline.TASK"


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsServer]:
    with NatsServer() as srv:
        yield srv


def _task(n: int) -> Signal:
    return Signal(type=SignalType.TASK, trace_id="trc_inline", payload={"n": n})


@asynccontextmanager
async def _buses(
    kind: str, nats: NatsServer, on_publish: list[object]
) -> AsyncIterator[tuple[Synapse, Synapse]]:
    """(subscriber side, publisher side) of one bus."""
    if kind == "nats":
        async with NatsSynapse(nats.url) as a, NatsSynapse(nats.url) as b:
            yield a, b
        return

    def hook(subject: str, frame: object) -> None:
        on_publish.append(_current_task())

    async with DevSynapseServer(on_publish=hook) as srv, DevSynapse(srv.url) as a, DevSynapse(srv.url) as b:
        yield a, b


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # trio: no asyncio loop at all
        return "trio"


@pytest.mark.parametrize("kind", ["cosmo", "nats"])
async def test_signals_are_filed_from_the_read_callback_on_asyncio_and_by_the_reader_on_trio(
    kind: str, nats: NatsServer, anyio_backend: str
) -> None:
    fast_calls: list[tuple[int, object]] = []
    server_tasks: list[object] = []
    handled: list[int] = []
    seen_send, seen = anyio.create_memory_object_stream[int](10)

    async def handler(sig: Signal) -> None:
        handled.append(sig.payload["n"])
        seen_send.send_nowait(sig.payload["n"])

    def fast(sig: Signal) -> bool:
        fast_calls.append((sig.payload["n"], _current_task()))
        if sig.payload["n"] % 2 == 0:
            return False  # even ones go to the pump (which tries this again) and the handler
        seen_send.send_nowait(sig.payload["n"])  # anyio works in the callback too
        return True

    async with _buses(kind, nats, server_tasks) as (sub_side, pub_side):
        sub = await sub_side.subscribe(SUBJECT, handler)
        sub.fast = fast
        if isinstance(sub_side, NatsSynapse):
            await sub_side.flush()  # the server has the SUB before the other connection publishes
        with anyio.fail_after(10):
            for n in range(8):
                await pub_side.publish(SUBJECT, _task(n))
                assert await seen.receive() == n  # one at a time: each finds the pump idle
    assert handled == [0, 2, 4, 6]
    if anyio_backend == "asyncio":
        assert [n for n, task in fast_calls if task is None] == list(range(8))  # each first from the callback
        assert [n for n, task in fast_calls if task is not None] == [0, 2, 4, 6]  # the pump's retries
        assert server_tasks == ([None] * 8 if kind == "cosmo" else [])
    else:
        assert {task for _, task in fast_calls} == {"trio"}
        assert server_tasks == (["trio"] * 8 if kind == "cosmo" else [])
