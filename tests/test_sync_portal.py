"""The portal on its own: lazy start, one owner task, backstop deadline, worker-thread limit, closed state."""

from __future__ import annotations

import threading
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from cosmonapse import Axon, MemorySynapse, Signal
from cosmonapse_sync import FacadeClosedError, Portal, PortalTimeout, SyncDendrite


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_setup_and_teardown_run_in_one_owner_task(backend: str) -> None:
    tasks: dict[str, Any] = {}

    async def setup(stack: AsyncExitStack) -> str:
        tasks["setup"] = anyio.get_current_task().id

        async def teardown() -> None:
            tasks["teardown"] = anyio.get_current_task().id

        stack.push_async_callback(teardown)
        return "resource"

    portal = Portal(setup, backend=backend, name="cosmonapse-portal-test")
    assert portal.live is None and "setup" not in tasks  # nothing until first use

    async def task_id() -> int:
        return anyio.get_current_task().id

    assert portal.call(task_id) != tasks["setup"]  # calls are tasks of their own
    loop = portal.live
    assert loop is not None and loop.value == "resource" and loop.thread.name == "cosmonapse-portal-test"
    assert portal.close()
    assert tasks["teardown"] == tasks["setup"]
    with pytest.raises(FacadeClosedError):
        portal.call(task_id)


def test_a_wedged_loop_hits_the_callers_backstop() -> None:
    async def setup(stack: AsyncExitStack) -> None:
        return None

    portal = Portal(setup)
    loop = portal.current()
    release = threading.Event()

    async def wedge() -> None:
        release.wait(10)  # blocks the whole loop (what a careless async handler would do)

    async def quick() -> str:
        return "ok"

    try:
        loop.submit(wedge, wait=False)
        t0 = time.monotonic()
        with pytest.raises(PortalTimeout, match=r"within 0\.1 s"):
            loop.call(quick, backstop_s=0.1, cancel_grace_s=0.1)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
    assert loop.call(quick) == "ok"  # the loop recovers once unblocked
    portal.close()


def test_worker_threads_are_bounded_and_reused() -> None:
    f = SyncDendrite("memory://", namespace="pool", worker_threads=2)
    release = threading.Event()
    entered = threading.Semaphore(0)
    names: list[str] = []

    @f.on_agent_output
    def blocking(sig: Signal) -> None:
        names.append(threading.current_thread().name)
        entered.release()
        release.wait(10)

    async def echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
        return input

    f.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
    try:
        for i in range(3):
            f.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=10)
        assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
        assert not entered.acquire(timeout=0.2)  # the third handler waits for a free thread
        workers = {t.name for t in threading.enumerate() if t.name.startswith("cosmonapse-sync-worker")}
        assert workers == {"cosmonapse-sync-worker-1", "cosmonapse-sync-worker-2"}
        release.set()
        assert entered.acquire(timeout=10)  # ... and then runs on one of the two
        assert set(names) == workers
    finally:
        release.set()
        f.close()


def test_a_pathway_outliving_its_facade_refuses_reads_and_closes_quietly() -> None:
    f = SyncDendrite("memory://", namespace="gone")
    pw = f.observe_pathway("trc_01M7YS0FJKXG9J11Z9G9H3G7W6")
    f.close()
    with pytest.raises(FacadeClosedError):
        pw.wait(timeout_s=1)
    pw.close()


class GatedSynapse(MemorySynapse):
    """Its first subscribe (inside Dendrite.start) waits for a gate: start-up held open."""

    def __init__(self, entered: threading.Event, gate: threading.Event) -> None:
        super().__init__()
        self.entered, self.gate, self.passed = entered, gate, False

    async def subscribe(self, subject: str, handler: Any, *, queue_group: str | None = None) -> Any:
        if not self.passed:
            self.passed = True
            self.entered.set()
            await anyio.to_thread.run_sync(self.gate.wait)
        return await super().subscribe(subject, handler, queue_group=queue_group)


def test_a_handler_registered_while_the_portal_starts_is_not_lost() -> None:
    entered, gate, submitted, fired = (threading.Event() for _ in range(4))
    f = SyncDendrite(lambda: GatedSynapse(entered, gate), namespace="race")

    async def echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
        return input

    f.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
    starter = threading.Thread(target=f.start)
    starter.start()
    try:
        assert entered.wait(10)  # the records were read; the Dendrite is starting
        live = f._live
        assert live is not None
        loop, submit = live[0], live[0].submit

        def spy(*args: Any, **kw: Any) -> Any:
            submitted.set()
            return submit(*args, **kw)

        loop.submit = spy  # type: ignore[method-assign]
        registrar = threading.Thread(target=lambda: f.on_final(lambda sig: fired.set()))
        registrar.start()
        assert submitted.wait(10)  # forwarded to the Dendrite being started, not only recorded
    finally:
        gate.set()
    starter.join(10)
    registrar.join(10)
    f.dispatch_and_wait(neuron="echo", input={}, scope="terminal", timeout_s=10)
    assert fired.wait(10)
    f.close()
