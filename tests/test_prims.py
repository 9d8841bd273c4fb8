"""The loop's own primitives behave as anyio's do: cancel scopes reach their waits, same clock."""

from __future__ import annotations

import anyio
import pytest
import sniffio

from cosmonapse.prims import Prims

pytestmark = pytest.mark.anyio


async def test_an_anyio_cancel_scope_cancels_a_wait_on_the_one_waiter_event() -> None:
    prims = Prims.current()
    ev = prims.waiter()
    with anyio.fail_after(5):
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:

                async def cancel_when_blocked() -> None:
                    await anyio.wait_all_tasks_blocked()
                    outer.cancel()

                tg.start_soon(cancel_when_blocked)
                await ev.wait()
                pytest.fail("the wait was not cancelled")
    assert outer.cancelled_caught
    assert not ev.is_set()


async def test_the_cancel_scope_class_builds_a_working_anyio_scope() -> None:
    prims = Prims.current()
    scope = prims.cancel_scope()
    assert isinstance(scope, anyio.CancelScope)
    ev = prims.waiter()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def cancel_it() -> None:
                await anyio.wait_all_tasks_blocked()
                scope.cancel()  # what a STOP does to a running TASK

            tg.start_soon(cancel_it)
            with scope:
                await ev.wait()
    assert scope.cancelled_caught
    with prims.cancel_scope(deadline=anyio.current_time() - 1) as expired:
        await anyio.sleep(1)  # allowed: an expired deadline must cancel it at once
    assert expired.cancelled_caught


async def test_now_is_anyios_clock() -> None:
    prims = Prims.current()
    before = anyio.current_time()
    mine = prims.now()
    after = anyio.current_time()
    assert before <= mine <= after


def test_outside_a_loop_it_falls_back_to_anyios_generic_calls() -> None:
    prims = Prims.current_or_generic()
    assert prims.waiter is anyio.Event
    assert prims.now is anyio.current_time
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        Prims.current()


async def test_the_one_waiter_event_wakes_its_waiter_and_stays_set() -> None:
    prims = Prims.current()
    ev = prims.waiter()
    woke = anyio.Event()

    async def waiter() -> None:
        await ev.wait()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set() and not ev.is_set()
        ev.set()
        ev.set()  # twice: nothing more happens
        with anyio.fail_after(5):
            await woke.wait()
    assert ev.is_set()
    with anyio.fail_after(5):
        await ev.wait()  # set already: returns at once


async def test_a_cancelled_wait_on_the_one_waiter_event_leaves_it_usable() -> None:
    prims = Prims.current()
    ev = prims.waiter()
    with anyio.move_on_after(0.01) as scope:
        await ev.wait()
    assert scope.cancelled_caught
    ev.set()  # no waiter left behind to wake (it would be a task that moved on)
    with anyio.fail_after(5):
        await ev.wait()


async def test_the_one_waiter_event_refuses_a_second_waiter() -> None:
    prims = Prims.current()
    if prims.waiter is anyio.Event:
        pytest.skip("this backend has no one-waiter event of its own")
    ev = prims.waiter()
    errors: list[BaseException] = []

    async def second() -> None:
        try:
            await ev.wait()
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ev.wait)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            await second()
        ev.set()
    assert errors and "one-waiter" in str(errors[0])
