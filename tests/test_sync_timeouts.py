"""A caller that stops waiting stops the work: the wait is cancelled and a STOP goes out before it raises."""

from __future__ import annotations

import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cosmonapse import Axon, DispatchTimeout, Signal, new_trace_id
from cosmonapse_sync import SyncDendrite, SyncNeuronContext
from cosmonapse_sync.testing import ChildProcess, dev_bus


class Probe:
    """What the blocking Neuron and the STOP handler saw, as events the test can wait on."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.stop_seen = threading.Event()
        self.stops: list[Signal] = []
        self.on_start: Any = None


@pytest.fixture(params=["asyncio", "trio"])
def rig(request: pytest.FixtureRequest) -> Iterator[tuple[SyncDendrite, Probe]]:
    probe = Probe()
    f = SyncDendrite("memory://", backend=request.param, namespace="tmo", stop_ack_timeout_s=5.0)

    async def blocks_until_cancelled(input: dict[str, Any], context: Any) -> None:
        probe.started.set()
        if probe.on_start is not None:
            probe.on_start()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            probe.cancelled.set()
            raise

    def plain_blocker(input: dict[str, Any], context: SyncNeuronContext) -> dict[str, Any]:
        probe.started.set()
        if context.cancelled.wait(30):
            probe.cancelled.set()
        return {"too": "late"}

    f.attach_axon(Axon(neuron_id="sleeper", neuron_fn=blocks_until_cancelled))
    f.attach_axon(Axon(neuron_id="plain", neuron_fn=plain_blocker))

    @f.on_stop
    def record(sig: Signal) -> None:
        probe.stops.append(sig)
        probe.stop_seen.set()

    with f:
        yield f, probe


@pytest.mark.parametrize("neuron", ["sleeper", "plain"])
def test_timeout_cancels_the_neuron_and_publishes_stop(rig: tuple[SyncDendrite, Probe], neuron: str) -> None:
    f, probe = rig
    trace = new_trace_id()
    with pytest.raises(DispatchTimeout, match=trace):
        f.dispatch_and_wait(neuron=neuron, input={}, timeout_s=0.2, trace_id=trace)
    assert probe.started.is_set()
    assert probe.stop_seen.wait(10)
    assert [s.trace_id for s in probe.stops] == [trace]
    assert probe.stops[0].payload["reason"] == "dispatch_and_wait timed out"
    assert probe.cancelled.wait(10)
    assert f.dendrite is not None and f.dendrite.is_stopped(trace)


def test_keyboard_interrupt_cancels_and_stops_before_it_propagates(rig: tuple[SyncDendrite, Probe]) -> None:
    f, probe = rig
    main = threading.main_thread().ident
    assert threading.get_ident() == main
    probe.on_start = lambda: signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C while the caller waits
    trace = new_trace_id()
    with pytest.raises(KeyboardInterrupt):
        f.dispatch_and_wait(neuron="sleeper", input={}, timeout_s=None, trace_id=trace)
    assert probe.stop_seen.wait(10)
    assert probe.stops[0].trace_id == trace
    assert probe.stops[0].payload["reason"] == "the caller gave up on dispatch_and_wait"
    assert probe.cancelled.wait(10)
    assert f.dispatch_task(neuron="nobody", input={}).trace_id != trace  # the facade is still usable


WORKER = textwrap.dedent(
    """
    import os, signal, threading
    from cosmonapse import Axon
    from cosmonapse_sync import SyncDendrite

    facade = SyncDendrite(os.environ["SYNAPSE_URL"], namespace="tmo", dendrite_id="worker", role="worker")

    def blocker(input, context):
        print("started", context.trace_id, flush=True)
        if context.cancelled.wait(30):
            print("cancelled", context.trace_id, flush=True)
        return {"too": "late"}

    facade.attach_axon(Axon(neuron_id="blocker", neuron_fn=blocker))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with facade:
        print("worker ready", flush=True)
        stop.wait()
    """
)


@pytest.mark.slow
def test_a_remote_worker_is_cancelled_before_the_call_raises(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with (
        dev_bus("tmo") as url,
        ChildProcess([sys.executable, str(script)], ready="worker ready", env={"SYNAPSE_URL": url}) as worker,
        SyncDendrite(url, namespace="tmo", dendrite_id="web", stop_ack_timeout_s=5.0) as f,
    ):
        trace = new_trace_id()
        t0 = time.monotonic()
        with pytest.raises(DispatchTimeout):
            f.dispatch_and_wait(neuron="blocker", input={}, timeout_s=0.5, trace_id=trace)
        elapsed = time.monotonic() - t0
        worker.wait_for(f"started {trace}", 10)
        worker.wait_for(f"cancelled {trace}", 10)
        # The worker's STOPPED ack ended the wait: well before stop_ack_timeout_s ran out.
        assert elapsed < 0.5 + 4.0
