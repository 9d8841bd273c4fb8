"""LoopBridge: virtual time that moves only when told, timers in order, hangs reported, on both backends."""

from __future__ import annotations

import anyio
import pytest

from cosmonapse.testing.bridge import LoopBridge, StepTimeout

BACKENDS = ["asyncio", "trio"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_is_frozen_between_steps_and_advances_in_deadline_order(backend: str) -> None:
    fired: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await anyio.sleep(seconds)  # allowed: the timers under test (virtual clock)
        fired.append((name, anyio.current_time()))
        if name == "b":  # a timer set while advancing fires in the same advance, at its own time
            await anyio.sleep(0.1)  # allowed: a timer under test (virtual clock)
            fired.append(("b2", anyio.current_time()))

    with LoopBridge(backend, step_timeout_s=10) as bridge:
        start = bridge.now()
        bridge.start_soon(sleeper, "a", 1.0)
        bridge.start_soon(sleeper, "b", 0.5)
        bridge.settle()
        assert fired == [] and bridge.now() == start
        bridge.advance(0.7)
        assert fired == [("b", start + 0.5), ("b2", start + 0.6)]
        bridge.advance(1.0)
        assert fired[-1] == ("a", start + 1.0)
        assert bridge.now() == pytest.approx(start + 1.7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_autojump_runs_long_sleeps_and_timeouts_in_no_real_time(backend: str) -> None:
    async def nap() -> str:
        await anyio.sleep(3600)  # allowed: autojump skips it (virtual clock)
        return "rested"

    async def stuck() -> None:
        with anyio.fail_after(30):
            await anyio.sleep_forever()

    with LoopBridge(backend, step_timeout_s=10) as bridge:
        before = bridge.now()
        assert bridge.call(nap, autojump=True) == "rested"
        assert bridge.now() - before == pytest.approx(3600)
        with pytest.raises(TimeoutError):  # the step's own timeout, not the bridge's
            bridge.call(stuck, autojump=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_that_waits_for_frozen_time_is_reported_not_hung(backend: str) -> None:
    async def waits() -> None:
        await anyio.sleep(1)  # allowed: waits on frozen virtual time, which is the point

    with (
        LoopBridge(backend, step_timeout_s=0.3) as bridge,
        pytest.raises(StepTimeout, match="did not finish"),
    ):
        bridge.call(waits)
