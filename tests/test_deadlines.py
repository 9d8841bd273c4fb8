"""The Dendrite's timer service: deadlines fire in order, never early, and can be cancelled."""

from __future__ import annotations

import anyio
import pytest

from cosmonapse.deadlines import Deadlines

pytestmark = pytest.mark.anyio


async def test_timers_fire_in_order_not_early_and_cancelled_ones_never() -> None:
    deadlines = Deadlines(resolution=0.001)
    fired: list[tuple[str, float]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.run)
        start = anyio.current_time()
        late = deadlines.schedule(0.06)
        never = deadlines.schedule(0.03)
        early = deadlines.schedule(0.02)  # scheduled after a later one: must wake the timer task
        never.cancel()
        for name, timer in (("early", early), ("late", late)):
            timer.target = anyio.Event()
            with anyio.fail_after(5):
                await timer.target.wait()
            fired.append((name, anyio.current_time() - start))
        tg.cancel_scope.cancel()
    assert [n for n, _ in fired] == ["early", "late"]
    assert fired[0][1] >= 0.02 and fired[1][1] >= 0.06
    assert early.expired and late.expired and not never.expired
    assert len(deadlines) == 0


async def test_pathway_wait_times_out_through_the_timer_service() -> None:
    from cosmonapse import MemorySynapse, PathwayTimeout
    from cosmonapse.dendrite import Dendrite

    async with MemorySynapse() as syn, Dendrite(synapse=syn) as d:
        assert d._core.deadlines is not None
        pw = await d.observe_pathway("trc_quiet")
        start = anyio.current_time()
        with pytest.raises(PathwayTimeout, match=r"trc_quiet within 0\.05 s"):
            await pw.wait(0.05)
        assert anyio.current_time() - start >= 0.05
        assert len(d._core.deadlines) == 0  # the timer was cleaned up
