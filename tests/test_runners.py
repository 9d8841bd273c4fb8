"""``RunnerPool`` and ``Clock`` on their own: bounds, order, reuse, isolation, closing."""

from __future__ import annotations

import contextvars

import anyio
import anyio.lowlevel
import pytest

from cosmonapse.clock import Clock
from cosmonapse.runners import JobScope, RunnerPool, job_scope
from cosmonapse.testing.harness import assert_no_leaked_tasks

pytestmark = pytest.mark.anyio

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="unset")


class Gate:
    """Jobs that block until released, and record when they ran."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.started: list[int] = []
        self.changed = anyio.Event()
        self.running = 0
        self.peak = 0

    async def job(self, n: int) -> None:
        self.started.append(n)
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.changed.set()
        self.changed = anyio.Event()
        try:
            await self.release.wait()
        finally:
            self.running -= 1

    async def until_started(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.started) < count:
                await self.changed.wait()


async def test_at_most_limit_jobs_run_at_once() -> None:
    gate = Gate()
    async with assert_no_leaked_tasks(), anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 2, name="t")
        await pool.submit(gate.job, 0)
        await pool.submit(gate.job, 1)
        assert pool.saturated
        for n in (2, 3, 4):
            tg.start_soon(pool.submit, gate.job, n)
        await gate.until_started(2)
        await anyio.wait_all_tasks_blocked()
        assert gate.running == 2 and sorted(gate.started) == [0, 1]  # the others wait
        gate.release.set()
        await gate.until_started(5)
        assert sorted(gate.started) == [0, 1, 2, 3, 4] and gate.peak == 2
        assert pool.runners <= 2  # the two runners took every job: no task per job
        pool.close()


async def test_waiting_submitters_are_served_first_come_first_served() -> None:
    gate = Gate()
    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")
        await pool.submit(gate.job, 0)
        for n in (1, 2, 3):  # each waits for the one runner, in this order
            tg.start_soon(pool.submit, gate.job, n)
            await anyio.wait_all_tasks_blocked()
        gate.release.set()
        await gate.until_started(4)
        pool.close()
    assert gate.started == [0, 1, 2, 3]


async def test_runners_are_reused_and_retire_beyond_max_idle() -> None:
    done = anyio.Event()
    count = 0

    async def quick() -> None:
        nonlocal count
        count += 1
        if count == 20:
            done.set()

    async with assert_no_leaked_tasks(), anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 4, max_idle=0, name="t")
        with anyio.fail_after(5):
            for _ in range(20):  # more jobs than runners: submitters wait for retiring ones
                await pool.submit(quick)
            await done.wait()
        await anyio.wait_all_tasks_blocked()
        assert pool.runners == 0  # max_idle=0: every runner retired when it ran out of work
        pool.close()


async def test_a_job_that_raises_is_logged_and_the_runner_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    ran = anyio.Event()

    async def boom() -> None:
        raise ValueError("job bug")

    async def after() -> None:
        ran.set()

    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")
        await pool.submit(boom)
        await pool.submit(after)
        with anyio.fail_after(5):
            await ran.wait()
        assert pool.runners == 1
        pool.close()
    assert "job bug" in caplog.text


async def test_contextvars_do_not_leak_from_one_job_to_the_next() -> None:
    seen: list[str] = []
    done = anyio.Event()

    async def sets() -> None:
        REQUEST.set("job one")
        await anyio.lowlevel.checkpoint()  # set across a suspension, too
        seen.append(REQUEST.get())

    async def reads() -> None:
        seen.append(REQUEST.get())
        done.set()

    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")  # one runner: both jobs run on it
        await pool.submit(sets)
        await pool.submit(reads)
        with anyio.fail_after(5):
            await done.wait()
        assert pool.runners == 1
        pool.close()
    assert seen == ["job one", "unset"]


async def test_cancellation_reaches_the_job_through_its_context() -> None:
    cancelled = anyio.Event()
    entered = anyio.Event()

    async def blocked() -> None:
        REQUEST.set("mine")
        entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            assert REQUEST.get() == "mine"
            cancelled.set()
            raise

    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")
        await pool.submit(blocked)
        with anyio.fail_after(5):
            await entered.wait()
        tg.cancel_scope.cancel()
    assert cancelled.is_set()


async def test_close_releases_waiting_submitters_and_refuses_new_jobs() -> None:
    gate = Gate()
    refused: list[type[BaseException]] = []

    async def submit_late() -> None:
        try:
            await pool.submit(gate.job, 9)
        except anyio.ClosedResourceError as exc:
            refused.append(type(exc))

    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")
        await pool.submit(gate.job, 0)
        tg.start_soon(submit_late)
        await anyio.wait_all_tasks_blocked()
        pool.close()
        await anyio.wait_all_tasks_blocked()
        assert refused == [anyio.ClosedResourceError]
        assert not pool.try_submit(gate.job, 10)
        with pytest.raises(anyio.ClosedResourceError):
            await pool.submit(gate.job, 11)
        gate.release.set()
    assert gate.started == [0]


async def test_a_cancelled_waiting_submitter_leaves_the_queue() -> None:
    gate = Gate()

    async def submit_in(scope: anyio.CancelScope, n: int) -> None:
        with scope:
            await pool.submit(gate.job, n)

    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")
        await pool.submit(gate.job, 0)
        doomed = anyio.CancelScope()
        tg.start_soon(submit_in, doomed, 1)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(pool.submit, gate.job, 2)
        await anyio.wait_all_tasks_blocked()
        doomed.cancel()  # the first waiter gives up: the runner goes to the next one
        await anyio.wait_all_tasks_blocked()
        gate.release.set()
        await gate.until_started(2)
        pool.close()
    assert gate.started == [0, 2]


async def test_try_submit_never_waits() -> None:
    gate = Gate()
    async with anyio.create_task_group() as tg:
        pool = RunnerPool(tg, 1, name="t")
        assert pool.try_submit(gate.job, 0)
        assert not pool.try_submit(gate.job, 1)  # full: the caller decides
        gate.release.set()
        await gate.until_started(1)
        pool.close()


async def test_limit_must_be_positive() -> None:
    async with anyio.create_task_group() as tg:
        with pytest.raises(ValueError):
            RunnerPool(tg, 0)


async def test_clock_runs_each_job_periodically_without_overlap() -> None:
    ticks: list[str] = []
    slow_entered = anyio.Event()
    release_slow = anyio.Event()
    fast_done = anyio.Event()
    launched: list[str] = []

    async def launch(fn: object) -> None:
        tg.start_soon(fn)  # type: ignore[arg-type]

    async def fast() -> None:
        ticks.append("fast")
        if ticks.count("fast") == 5:
            fast_done.set()

    async def slow() -> None:
        launched.append("slow")
        slow_entered.set()
        await release_slow.wait()

    async with assert_no_leaked_tasks(), anyio.create_task_group() as tg:
        clock = Clock(launch)
        clock.add(0.005, slow, name="slow")
        tg.start_soon(clock.run)
        with anyio.fail_after(5):
            await slow_entered.wait()
        clock.add(0.005, fast, name="fast")  # added while the clock runs
        with anyio.fail_after(5):
            await fast_done.wait()
        assert launched == ["slow"]  # its later ticks were skipped: never two runs at once
        release_slow.set()
        clock.clear()
        assert len(clock) == 0
        tg.cancel_scope.cancel()


async def test_clock_rejects_a_non_positive_period() -> None:
    async def launch(fn: object) -> None:
        return None

    async def job() -> None:
        return None

    with pytest.raises(ValueError):
        Clock(launch).add(0, job)


# -- scoped runners: one cancel scope across jobs, each job cancelled alone ----------------------


async def test_a_scoped_job_cancelled_by_its_handle_ends_and_the_next_job_on_that_runner_runs() -> None:
    """One runner (limit 1), so the second job runs on the runner whose scope was cancelled."""
    outcomes: list[str] = []
    handles: list[object] = []
    started = anyio.Event()
    second_done = anyio.Event()

    async def blocked() -> None:
        handle = job_scope.get()
        assert handle is not None
        handles.append(handle)
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            outcomes.append("first cancelled")
            raise

    async def after() -> None:
        handle = job_scope.get()
        assert handle is not None and handle is not handles[0]
        await anyio.lowlevel.checkpoint()  # it would raise here if the old scope were still in force
        outcomes.append("second ran")
        second_done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = RunnerPool(tg, 1, scoped=True)
            await pool.submit(blocked)
            await started.wait()
            handles[0].cancel()  # type: ignore[attr-defined]
            await pool.submit(after)  # waits for the only runner, which must come back
            await second_done.wait()
            assert pool.runners == 1  # the same runner, not a new one
            pool.close()
    assert outcomes == ["first cancelled", "second ran"]


async def test_a_handle_cancelled_after_its_job_is_over_touches_nothing() -> None:
    kept: list[JobScope] = []
    resumed = anyio.Event()
    release = anyio.Event()

    async def quick() -> None:
        handle = job_scope.get()
        assert handle is not None
        kept.append(handle)

    async def later() -> None:
        await release.wait()  # checkpoints here and after: a stray cancel would end it
        await anyio.lowlevel.checkpoint()
        resumed.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = RunnerPool(tg, 1, scoped=True)
            await pool.submit(quick)
            await pool.submit(later)  # the same runner takes it once quick is over
            await anyio.wait_all_tasks_blocked()
            kept[0].cancel()
            assert not kept[0].cancel_called
            release.set()
            await resumed.wait()
            pool.close()


async def test_a_job_that_swallows_its_cancellation_does_not_leave_the_scope_cancelled_for_the_next() -> None:
    started = anyio.Event()
    done: list[str] = []
    finished = anyio.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            done.append("swallowed")  # user code that catches cancellation and returns

    async def innocent() -> None:
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        done.append("innocent ran")
        finished.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = RunnerPool(tg, 1, scoped=True)
            handle_box: list[object] = []

            async def capture() -> None:
                handle_box.append(job_scope.get())
                await stubborn()

            await pool.submit(capture)
            await started.wait()
            handle_box[0].cancel()  # type: ignore[attr-defined]
            await pool.submit(innocent)
            await finished.wait()
            pool.close()
    assert done == ["swallowed", "innocent ran"]


async def test_an_unscoped_pool_sets_no_job_scope() -> None:
    seen: list[object] = []
    done = anyio.Event()

    async def look() -> None:
        seen.append(job_scope.get())
        done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = RunnerPool(tg, 1)
            await pool.submit(look)
            await done.wait()
            pool.close()
    assert seen == [None]
