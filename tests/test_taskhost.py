"""``TaskHost``: a resource's task group that any task may open and close."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus

from cosmonapse.taskhost import TaskHost, TaskHostClosed, TaskHostFailed
from cosmonapse.testing import assert_no_leaked_tasks

pytestmark = pytest.mark.anyio


async def test_open_in_one_task_close_in_another() -> None:
    host = TaskHost("r")
    started = anyio.Event()
    cancelled = anyio.Event()

    async def background() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with assert_no_leaked_tasks():
        async with anyio.create_task_group() as tg:
            tg.start_soon(host.open)
        host.start_soon(background)
        with anyio.fail_after(5):
            await started.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(host.aclose)
        assert cancelled.is_set()
        assert not host.is_open


async def test_open_inside_fail_after_outlives_the_scope() -> None:
    host = TaskHost("r")
    with anyio.fail_after(5):
        await host.open()
    # the scope that surrounded open() has exited; the group is still fine
    ran = anyio.Event()

    async def job() -> None:
        ran.set()

    host.start_soon(job)
    with anyio.fail_after(5):
        await ran.wait()
    await host.aclose()


async def test_opener_cancelled_does_not_cancel_the_host() -> None:
    host = TaskHost("r")
    with anyio.CancelScope() as scope:
        await host.open()
        scope.cancel()
        await anyio.lowlevel.checkpoint()
    assert host.is_open
    value = await host.start(_report, 7)
    assert value == 7
    await host.aclose()


async def _report(value: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started(value)


async def test_close_in_the_order_opened() -> None:
    hosts = [TaskHost(f"r{i}") for i in range(3)]
    async with assert_no_leaked_tasks():
        for h in hosts:
            await h.open()
            h.start_soon(anyio.sleep_forever)
        for h in hosts:  # FIFO, not LIFO: a task group entered per call would break here
            with anyio.fail_after(5):
                await h.aclose()


async def test_background_failure_is_raised_by_check_and_close() -> None:
    host = TaskHost("r")
    await host.open()

    async def boom() -> None:
        raise ValueError("bad")

    host.start_soon(boom)
    with anyio.fail_after(5):
        await host.wait_ended()
    assert isinstance(host.failure, ValueError)
    with pytest.raises(TaskHostFailed) as info:
        host.check()
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(TaskHostFailed):
        host.start_soon(anyio.sleep_forever)
    with pytest.raises(TaskHostFailed):
        await host.aclose()
    await host.aclose()  # raised once; idempotent afterwards


async def test_closed_host_refuses_work() -> None:
    host = TaskHost("r")
    with pytest.raises(TaskHostClosed):
        host.start_soon(anyio.sleep_forever)
    await host.aclose()  # never opened: nothing to do
    await host.open()
    await host.aclose()
    with pytest.raises(TaskHostClosed):
        host.start_soon(anyio.sleep_forever)
    with pytest.raises(TaskHostClosed):
        await host.open()


async def test_close_from_a_cancelled_task_still_joins() -> None:
    host = TaskHost("r")
    await host.open()
    ended = anyio.Event()

    async def child() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    host.start_soon(child)
    await anyio.lowlevel.checkpoint()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await host.aclose()
    assert ended.is_set()


async def test_close_timeout_bounds_a_child_that_ignores_cancellation() -> None:
    host = TaskHost("r")
    await host.open()
    release = anyio.Event()
    entered = anyio.Event()

    async def stubborn() -> None:
        with anyio.CancelScope(shield=True):
            entered.set()
            await release.wait()

    host.start_soon(stubborn)
    with anyio.fail_after(5):
        await entered.wait()
    with anyio.fail_after(5):
        await host.aclose(timeout_s=0.05)
    release.set()
    await host.aclose()  # now joins for real
