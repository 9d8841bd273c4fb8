"""SignalBuffer: bounded FIFO, backpressure on put, close semantics, cancellation safety."""

from __future__ import annotations

import anyio
import pytest

from cosmonapse.synapse.buffer import SignalBuffer

pytestmark = pytest.mark.anyio


async def test_fifo_and_backpressure() -> None:
    buf: SignalBuffer[int] = SignalBuffer(2)
    assert buf.put_nowait(1) and buf.put_nowait(2)
    assert not buf.put_nowait(3)  # full: nothing queued
    done: list[int] = []

    async def blocked_put() -> None:
        await buf.put(3)
        done.append(3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked_put)
        await anyio.wait_all_tasks_blocked()
        assert done == []  # the writer waits while the buffer is full
        assert await buf.get() == 1  # room: the writer goes on
    assert done == [3]
    assert [await buf.get(), await buf.get()] == [2, 3]
    with pytest.raises(anyio.WouldBlock):
        buf.get_nowait()


async def test_get_waits_then_close_drains_and_ends() -> None:
    buf: SignalBuffer[str] = SignalBuffer(4)
    got: list[str] = []

    async def reader() -> None:
        try:
            while True:
                got.append(await buf.get())
        except anyio.EndOfStream:
            got.append("end")

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        buf.put_nowait("a")
        buf.put_nowait("b")
        buf.close()
    assert got == ["a", "b", "end"]
    assert buf.put_nowait("late")  # dropped once closed, never raises
    assert len(buf) == 0


async def test_close_releases_blocked_writers() -> None:
    buf: SignalBuffer[int] = SignalBuffer(1)
    buf.put_nowait(0)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(buf.put, i)
        await anyio.wait_all_tasks_blocked()
        buf.close()  # every writer returns instead of hanging


async def test_a_cancelled_writer_leaves_the_queue() -> None:
    buf: SignalBuffer[int] = SignalBuffer(1)
    buf.put_nowait(0)
    second_done = anyio.Event()
    first_scope = anyio.CancelScope()

    async def first() -> None:
        with first_scope:
            await buf.put(1)

    async def second() -> None:
        await buf.put(2)
        second_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        first_scope.cancel()  # the head of the queue gives up
        await anyio.wait_all_tasks_blocked()
        assert await buf.get() == 0  # the room goes to the next writer in line
        with anyio.fail_after(5):
            await second_done.wait()
    assert buf.get_nowait() == 2
    with pytest.raises(anyio.WouldBlock):
        buf.get_nowait()
