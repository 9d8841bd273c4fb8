"""MemorySynapse on asyncio and trio: delivery, queue groups, order, backpressure, clean shutdown (§20)."""

from __future__ import annotations

import logging

import anyio
import pytest

from cosmonapse import Directed, MemorySynapse, Signal, SignalType, SynapseClosedError
from cosmonapse.subjects import signal_subject

pytestmark = pytest.mark.anyio

NS = "ns"
TIMEOUT = 5


class Inbox:
    """A handler that records what it gets; tests await a count under a deadline."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self._changed = anyio.Event()

    async def __call__(self, sig: Signal) -> None:
        self.signals.append(sig)
        self._changed.set()

    async def wait_for(self, count: int) -> list[Signal]:
        with anyio.fail_after(TIMEOUT):
            while len(self.signals) < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.signals

    @property
    def numbers(self) -> list[int]:
        return [s.payload["n"] for s in self.signals]


def numbered(n: int, signal_type: SignalType = SignalType.FINAL, **payload: object) -> Signal:
    return Signal(type=signal_type, payload={"n": n, **payload})


def task_ids() -> set[int]:
    return {t.id for t in anyio.get_running_tasks()}


def pump_tasks(subject: str) -> list[str]:
    return [t.name for t in anyio.get_running_tasks() if t.name == f"synapse-pump:{subject}"]


async def test_not_connected_raises() -> None:
    syn = MemorySynapse()
    assert not syn.connected
    with pytest.raises(SynapseClosedError):
        await syn.publish("a", numbered(0))
    with pytest.raises(SynapseClosedError):
        await syn.subscribe("a", Inbox())
    async with syn:
        assert syn.connected
        await syn.publish("a", numbered(0))  # nobody listening: fine
    assert not syn.connected
    with pytest.raises(SynapseClosedError):
        await syn.publish("a", numbered(1))
    await syn.close()  # idempotent


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MemorySynapse(subscription_buffer=0)
    async with MemorySynapse() as syn:
        with pytest.raises(ValueError):
            await syn.subscribe("", Inbox())


async def test_exact_and_wildcard_delivery() -> None:
    addressed = Signal(type=SignalType.TASK, directed=Directed(id="w"), payload={"input": {}})
    routed = Signal(type=SignalType.TASK, payload={"input": {}, "capabilities": ["x"]})
    final = Signal(type=SignalType.FINAL, payload={"result": 1})
    async with MemorySynapse() as syn:
        exact, star, everything, other_ns, finals = (Inbox() for _ in range(5))
        await syn.subscribe("cosmonapse.ns.TASK", exact)
        await syn.subscribe("cosmonapse.*.TASK", star)
        await syn.subscribe("cosmonapse.ns.>", everything)
        await syn.subscribe("cosmonapse.other.>", other_ns)
        await syn.subscribe("cosmonapse.ns.FINAL", finals)
        for sig in (addressed, routed, final):
            await syn.publish(signal_subject(NS, sig), sig)
        await everything.wait_for(3)
        await exact.wait_for(1)
        await star.wait_for(1)
        await finals.wait_for(1)
        await anyio.wait_all_tasks_blocked()
    assert everything.signals == [addressed, routed, final]
    # The in-memory bus hands over the very object that was published (§20).
    assert all(a is b for a, b in zip(everything.signals, (addressed, routed, final), strict=True))
    assert exact.signals == [addressed]
    assert star.signals == [addressed]
    assert finals.signals == [final]
    assert other_ns.signals == []


async def test_queue_groups_round_robin() -> None:
    async with MemorySynapse() as syn:
        g = [Inbox() for _ in range(3)]
        h = [Inbox() for _ in range(2)]
        solo = Inbox()
        for inbox in g:
            await syn.subscribe("cosmonapse.ns.TASK.routed", inbox, queue_group="caps:a,b")
        for inbox in h:
            await syn.subscribe("cosmonapse.ns.>", inbox, queue_group="caps:c")
        await syn.subscribe("cosmonapse.ns.TASK.routed", solo)
        for n in range(12):
            await syn.publish("cosmonapse.ns.TASK.routed", numbered(n, SignalType.TASK))
        await solo.wait_for(12)
        for inbox in g:
            await inbox.wait_for(4)
        for inbox in h:
            await inbox.wait_for(6)
        await anyio.wait_all_tasks_blocked()
    assert solo.numbers == list(range(12))
    assert [len(i.signals) for i in g] == [4, 4, 4]
    assert [len(i.signals) for i in h] == [6, 6]
    # Each message went to exactly one member of each group, members in turn.
    assert sorted(n for i in g for n in i.numbers) == list(range(12))
    assert sorted(n for i in h for n in i.numbers) == list(range(12))
    assert {tuple(sorted(n % 3 for n in i.numbers)) for i in g} == {(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2)}


async def test_unsubscribe() -> None:
    async with MemorySynapse() as syn:
        wild, exact, member, other_member = Inbox(), Inbox(), Inbox(), Inbox()
        wild_sub = await syn.subscribe("x.>", wild)
        await syn.subscribe("x.a", exact)
        member_sub = await syn.subscribe("x.a", member, queue_group="g")
        await syn.subscribe("x.a", other_member, queue_group="g")
        await syn.publish("x.a", numbered(0))
        await syn.publish("x.a", numbered(1))
        await wild.wait_for(2)
        await exact.wait_for(2)
        await member.wait_for(1)
        await other_member.wait_for(1)
        assert pump_tasks("x.>") == ["synapse-pump:x.>"]

        await syn.unsubscribe(wild_sub)
        await syn.unsubscribe(member_sub)
        await syn.unsubscribe(wild_sub)  # twice is fine
        assert not wild_sub.active
        for n in (2, 3, 4):
            await syn.publish("x.a", numbered(n))
        await exact.wait_for(5)
        await other_member.wait_for(4)
        await anyio.wait_all_tasks_blocked()
        assert wild.numbers == [0, 1]
        assert member.numbers in ([0], [1])
        assert len(other_member.signals) == 4  # the remaining member gets everything
        assert pump_tasks("x.>") == []  # the pump of a removed subscription ends


async def test_unsubscribe_drains_what_was_buffered() -> None:
    release = anyio.Event()
    got: list[int] = []

    async def slow(sig: Signal) -> None:
        await release.wait()
        got.append(sig.payload["n"])

    async with MemorySynapse() as syn:
        sub = await syn.subscribe("s", slow)
        for n in range(5):
            await syn.publish("s", numbered(n))
        await syn.unsubscribe(sub)
        await syn.publish("s", numbered(99))
        release.set()
        with anyio.fail_after(TIMEOUT):
            while pump_tasks("s"):
                await anyio.wait_all_tasks_blocked()
        assert got == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("buffer", [1, 3, 1024])
async def test_order_per_subscription(buffer: int) -> None:
    per_publisher = 150
    async with MemorySynapse(subscription_buffer=buffer) as syn:
        exact, wild = Inbox(), Inbox()
        await syn.subscribe("cosmonapse.ns.FINAL", exact)
        await syn.subscribe("cosmonapse.ns.>", wild)

        async def publisher(name: str) -> None:
            for n in range(per_publisher):
                await syn.publish("cosmonapse.ns.FINAL", numbered(n, who=name))

        async with anyio.create_task_group() as tg:
            for name in ("p1", "p2", "p3"):
                tg.start_soon(publisher, name)
        await exact.wait_for(3 * per_publisher)
        await wild.wait_for(3 * per_publisher)
    for inbox in (exact, wild):
        for name in ("p1", "p2", "p3"):
            seen = [s.payload["n"] for s in inbox.signals if s.payload["who"] == name]
            assert seen == list(range(per_publisher))
    # Concurrent publishers interleave differently per subscription; each still gets everything.
    assert sorted(s.id for s in exact.signals) == sorted(s.id for s in wild.signals)


async def test_handler_that_raises_does_not_kill_the_pump(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    done = anyio.Event()

    async def flaky(sig: Signal) -> None:
        n = sig.payload["n"]
        seen.append(n)
        if n == 5:
            done.set()
        if n % 2 == 0:
            raise RuntimeError(f"boom {n}")

    with caplog.at_level(logging.ERROR, logger="cosmonapse.synapse"):
        async with MemorySynapse() as syn:
            await syn.subscribe("s", flaky)
            for n in range(6):
                await syn.publish("s", numbered(n))
            with anyio.fail_after(TIMEOUT):
                await done.wait()
    assert seen == list(range(6))
    failures = [r for r in caplog.records if r.name == "cosmonapse.synapse"]
    assert len(failures) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


async def test_backpressure_publish_waits_for_a_full_buffer() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    all_handled = anyio.Event()
    got: list[int] = []

    async def slow(sig: Signal) -> None:
        got.append(sig.payload["n"])
        entered.set()
        await release.wait()
        if len(got) == 3:
            all_handled.set()

    async with MemorySynapse(subscription_buffer=1) as syn:
        await syn.subscribe("s", slow)
        with anyio.fail_after(TIMEOUT):
            await syn.publish("s", numbered(0))  # the pump takes it; the handler blocks
            await entered.wait()
            await syn.publish("s", numbered(1))  # fills the one buffer slot
        published = anyio.Event()

        async def third() -> None:
            await syn.publish("s", numbered(2))
            published.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(third)
            await anyio.wait_all_tasks_blocked()
            assert not published.is_set()  # the publisher waits for room
            assert got == [0]
            release.set()
            with anyio.fail_after(TIMEOUT):
                await published.wait()
                await all_handled.wait()
    assert got == [0, 1, 2]


async def test_a_slow_subscriber_does_not_hold_up_others_with_room() -> None:
    release = anyio.Event()

    async def stuck(sig: Signal) -> None:
        await release.wait()

    async with MemorySynapse(subscription_buffer=8) as syn:
        fast = Inbox()
        await syn.subscribe("s", stuck)
        await syn.subscribe("s", fast)
        for n in range(8):  # within the slow subscriber's buffer: publish never waits
            with anyio.fail_after(TIMEOUT):
                await syn.publish("s", numbered(n))
        await fast.wait_for(8)
        release.set()
    assert fast.numbers == list(range(8))


async def test_close_leaves_no_task() -> None:
    before = task_ids()
    syn = MemorySynapse(subscription_buffer=2)
    await syn.connect()
    inboxes = [Inbox() for _ in range(4)]
    await syn.subscribe("a.>", inboxes[0])
    await syn.subscribe("a.b", inboxes[1])
    await syn.subscribe("a.b", inboxes[2], queue_group="g")
    await syn.subscribe("a.*", inboxes[3], queue_group="g")
    for n in range(10):
        await syn.publish("a.b", numbered(n))
    await inboxes[0].wait_for(10)
    # the root task hosting the synapse's group, one pump per subscription, nothing per message
    assert len(task_ids() - before) == 5
    await syn.close()
    assert task_ids() == before
    assert not syn.connected


async def test_close_cancels_stuck_handlers_and_releases_blocked_publishers() -> None:
    before = task_ids()
    never = anyio.Event()
    entered = anyio.Event()

    async def stuck(sig: Signal) -> None:
        entered.set()
        await never.wait()

    returned = anyio.Event()
    syn = MemorySynapse(subscription_buffer=1)

    async def blocked_publisher() -> None:
        await syn.publish("s", numbered(2))
        returned.set()

    # connect() and close() nest like any anyio context: the synapse's task group
    # opens inside this one (and inside the deadline), so it is closed first.
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await syn.connect()
            await syn.subscribe("s", stuck)
            await syn.publish("s", numbered(0))
            await entered.wait()
            await syn.publish("s", numbered(1))
            tg.start_soon(blocked_publisher)
            await anyio.wait_all_tasks_blocked()
            assert not returned.is_set()
            await syn.close()
            await returned.wait()
    assert task_ids() == before


async def test_reconnect_after_close_starts_without_old_subscriptions() -> None:
    syn = MemorySynapse()
    old, new, new_member = Inbox(), Inbox(), Inbox()
    async with syn:
        old_sub = await syn.subscribe("s", old)
        old_member = await syn.subscribe("s", old, queue_group="g")
    # Their pumps ended with the synapse, so the subscriptions ended too.
    assert not old_sub.active and not old_member.active
    async with syn:
        await syn.subscribe("s", new)
        await syn.subscribe("s", new_member, queue_group="g")
        for n in range(4):
            await syn.publish("s", numbered(n))
        await new.wait_for(4)
        await new_member.wait_for(4)  # no dead member takes a turn in the group
        await anyio.wait_all_tasks_blocked()
        await syn.unsubscribe(old_sub)  # harmless
    assert new.numbers == new_member.numbers == [0, 1, 2, 3]
    assert old.signals == []
