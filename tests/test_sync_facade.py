"""SyncDendrite on an in-process bus: the blocking API, handlers in worker threads, Pathways, start/close."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from cosmonapse import Axon, DispatchTimeout, Signal, SignalType, SynapseError, new_trace_id
from cosmonapse.retry import RetryStrategy
from cosmonapse_sync import FacadeClosedError, SyncDendrite, SyncNeuronContext, SyncPathway

T = SignalType


def ours() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("cosmonapse-")}


def echo(input: dict[str, Any], context: SyncNeuronContext) -> dict[str, Any]:
    context.emit_thought_delta(f"thinking in {threading.current_thread().name}")
    return {"echo": input, "thread": threading.current_thread().name}


@pytest.fixture(params=["asyncio", "trio"])
def facade(request: pytest.FixtureRequest) -> Iterator[SyncDendrite]:
    f = SyncDendrite("memory://", backend=request.param, namespace="sync", dendrite_id="web")
    f.attach_axon(Axon(neuron_id="echo", neuron_fn=echo, capabilities=["echo"]))
    try:
        yield f
    finally:
        assert f.close()
        assert not ours()


def test_nothing_starts_at_import_or_construction() -> None:
    code = (
        "import threading, cosmonapse_sync\n"
        "f = cosmonapse_sync.SyncDendrite('memory://', namespace='x')\n"
        "print(threading.active_count(), f.running)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "False"]


def test_dispatch_and_wait_runs_a_plain_function_neuron_in_a_worker_thread(facade: SyncDendrite) -> None:
    assert not facade.running
    reply = facade.dispatch_and_wait(neuron="echo", input={"n": 1}, timeout_s=10)
    assert facade.running
    assert reply.type is T.AGENT_OUTPUT
    assert reply.payload["output"]["echo"] == {"n": 1}
    assert reply.payload["output"]["thread"].startswith("cosmonapse-sync-worker-")
    assert facade.portal_thread is not None and facade.portal_thread.name == "cosmonapse-portal:web"


def test_capability_routed_and_terminal_scope(facade: SyncDendrite) -> None:
    reply = facade.dispatch_and_wait(capabilities=["echo"], input={"x": 2}, scope="terminal", timeout_s=10)
    assert reply.type is T.FINAL
    assert reply.payload["result"]["echo"] == {"x": 2}


def test_dispatch_gives_a_sync_pathway_to_iterate(facade: SyncDendrite) -> None:
    with facade.dispatch(neuron="echo", input={"k": "v"}, finalize=True) as pw:
        assert isinstance(pw, SyncPathway)
        types = [sig.type for sig in pw]
    assert types == [T.THOUGHT_DELTA, T.AGENT_OUTPUT, T.FINAL]
    assert pw.closed
    assert facade.open_pathways() == []


def test_pathway_wait_for_and_callbacks(facade: SyncDendrite) -> None:
    seen: list[tuple[str, str]] = []
    got = threading.Event()
    trace = new_trace_id()
    pw = facade.observe_pathway(trace)  # open before the TASK goes out: no race with the callback

    @pw.on(T.FINAL)
    def on_final(sig: Signal) -> None:
        seen.append((sig.type.value, threading.current_thread().name))
        got.set()

    facade.dispatch_task(neuron="echo", input={}, trace_id=trace, finalize=True)
    assert pw.wait_for(T.AGENT_OUTPUT, timeout_s=10).payload["output"]["echo"] == {}
    assert got.wait(10)
    assert seen[0][0] == "FINAL" and seen[0][1].startswith("cosmonapse-sync-worker-")
    pw.close()
    pw.close()  # idempotent


def test_pathway_signals_idle_timeout(facade: SyncDendrite) -> None:
    with facade.observe_pathway("0" * 26) as pw:
        from cosmonapse import PathwayTimeout

        with pytest.raises(PathwayTimeout):
            list(pw.signals(idle_timeout_s=0.05))


def test_sync_and_async_handlers_and_the_loop_is_never_blocked_by_a_sync_one(facade: SyncDendrite) -> None:
    release = threading.Event()
    entered = threading.Event()
    outputs: list[str] = []
    async_seen = threading.Event()

    @facade.on_agent_output(neuron="echo")
    def slow(sig: Signal) -> None:
        entered.set()
        release.wait(10)
        outputs.append(threading.current_thread().name)

    @facade.on_final
    async def quick(sig: Signal) -> None:
        async_seen.set()

    try:
        facade.dispatch_and_wait(neuron="echo", input={"i": 0}, timeout_s=10)
        assert entered.wait(10)
        # The sync handler is still blocked: the loop must keep serving calls meanwhile.
        reply = facade.dispatch_and_wait(neuron="echo", input={"i": 1}, scope="terminal", timeout_s=10)
        assert reply.type is T.FINAL
        assert async_seen.wait(10)
        assert not outputs
    finally:
        release.set()


def test_handlers_registered_on_a_running_facade_take_effect(facade: SyncDendrite) -> None:
    facade.start()
    got = threading.Event()
    facade.on_signal(T.AGENT_OUTPUT, lambda sig: got.set())
    facade.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
    assert got.wait(10)


def test_subscribe_and_unsubscribe(facade: SyncDendrite) -> None:
    got: list[Signal] = []
    arrived = threading.Event()

    def on_delta(sig: Signal) -> None:
        got.append(sig)
        arrived.set()

    sub = facade.subscribe(T.THOUGHT_DELTA, on_delta)
    facade.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
    assert arrived.wait(10)
    facade.unsubscribe(sub)
    assert sub.live is None and got[0].type is T.THOUGHT_DELTA
    again = facade.subscribe(T.THOUGHT_DELTA, on_delta)
    again.unsubscribe()  # the reference's spelling
    assert again.live is None and again not in facade._subs


def test_add_and_detach_axon_on_a_running_facade(facade: SyncDendrite) -> None:
    registered = threading.Event()
    facade.on_register_signal(neuron="late")(lambda sig: registered.set())
    facade.start()

    async def late(input: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"late": True}

    facade.add_axon(Axon(neuron_id="late", neuron_fn=late))
    assert registered.wait(10)
    assert set(facade.axons) == {"echo", "late"}
    assert facade.dispatch_and_wait(neuron="late", input={}, timeout_s=10).payload["output"] == {"late": True}
    facade.detach_axon("late")
    assert set(facade.axons) == {"echo"}
    with pytest.raises(DispatchTimeout):
        facade.dispatch_and_wait(neuron="late", input={}, timeout_s=0.1)


def test_generated_methods_and_call(facade: SyncDendrite) -> None:
    sig = facade.dispatch_task(neuron="echo", input={"t": 1})
    assert sig.type is T.TASK
    assert facade.cancel_trace("nothing-running") == 0
    assert facade.call(anyio.sleep, 0) is None
    assert facade.dendrite is not None and facade.dendrite.running


def test_run_with_retry_through_the_facade(facade: SyncDendrite) -> None:
    reply = facade.run_with_retry(
        retry=RetryStrategy(max_attempts=2, timeout_s=5), neuron="echo", input={"r": 1}
    )
    assert reply.payload["output"]["echo"] == {"r": 1}


def test_errors_from_the_async_side_are_raised_to_the_caller(facade: SyncDendrite) -> None:
    with pytest.raises(TypeError, match="input must be a dict"):
        facade.dispatch_task(neuron="echo", input=[1, 2])  # type: ignore[arg-type]


def test_context_vars_flow_into_the_call(facade: SyncDendrite) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")

    async def read() -> str:
        return var.get()

    results: dict[str, str] = {}

    def worker(name: str) -> None:
        var.set(name)
        results[name] = facade.call(read)

    threads = [threading.Thread(target=worker, args=(f"req-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {f"req-{i}": f"req-{i}" for i in range(8)}
    assert facade.call(read) == "none"


def test_a_neuron_dispatching_from_its_thread_gets_its_task_as_parent(facade: SyncDendrite) -> None:
    def inner(input: dict[str, Any], context: SyncNeuronContext) -> dict[str, Any]:
        return {"parent_id": context.task.parent_id}

    def outer(input: dict[str, Any], context: SyncNeuronContext) -> dict[str, Any]:
        reply = facade.dispatch_and_wait(neuron="inner", input={}, timeout_s=10)
        return {"task_id": context.task_id, "inner": reply.payload["output"]}

    facade.attach_axon(Axon(neuron_id="inner", neuron_fn=inner))
    facade.attach_axon(Axon(neuron_id="outer", neuron_fn=outer))
    out = facade.dispatch_and_wait(neuron="outer", input={}, timeout_s=10).payload["output"]
    assert out["inner"]["parent_id"] == out["task_id"]


def test_one_facade_many_threads(facade: SyncDendrite) -> None:
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(10):
                reply = facade.dispatch_and_wait(neuron="echo", input={"c": n, "i": i}, timeout_s=30)
                assert reply.payload["output"]["echo"] == {"c": n, "i": i}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_close_leaves_no_thread_and_is_final(backend: str) -> None:
    before = set(threading.enumerate())
    f = SyncDendrite("memory://", backend=backend, namespace="c")
    f.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
    with f:
        f.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
        assert ours()
    assert set(threading.enumerate()) == before
    assert f.closed and not f.running
    with pytest.raises(FacadeClosedError):
        f.dispatch_task(neuron="echo", input={})
    assert f.close()


def test_close_cancels_a_call_blocked_in_another_thread() -> None:
    f = SyncDendrite("memory://", namespace="c2")
    started = threading.Event()

    async def forever(input: dict[str, Any], context: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    f.attach_axon(Axon(neuron_id="forever", neuron_fn=forever))
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            f.dispatch_and_wait(neuron="forever", input={}, timeout_s=None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    assert started.wait(10)
    assert f.close(timeout_s=10)
    t.join(10)
    assert not t.is_alive()
    assert isinstance(outcome[0], FacadeClosedError)
    assert not ours()


def test_close_is_bounded_by_its_deadline_when_a_thread_is_stuck() -> None:
    f = SyncDendrite("memory://", namespace="c3", shutdown_timeout_s=0.2)
    stuck = threading.Event()
    entered = threading.Event()

    @f.on_agent_output
    def blocks(sig: Signal) -> None:
        entered.set()
        stuck.wait(30)

    f.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
    try:
        f.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
        assert entered.wait(10)
        assert f.close(timeout_s=0.3) is False
    finally:
        stuck.set()
    for t in [t for t in threading.enumerate() if t.name.startswith("cosmonapse-")]:
        t.join(10)  # once released, the stuck threads end on their own
    assert not ours()


def test_a_failed_start_is_raised_to_the_caller_and_retried_next_time() -> None:
    f = SyncDendrite("cosmo://127.0.0.1:1", namespace="down", start_timeout_s=10)
    for _ in range(2):
        with pytest.raises(SynapseError):
            f.dispatch_task(neuron="x", input={})
        assert not ours()
    f.close()


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="unsupported synapse URL"):
        SyncDendrite("http://nope")
    with pytest.raises(ValueError, match="role"):
        SyncDendrite("memory://", role="boss")
    with pytest.raises(ValueError, match="backend"):
        SyncDendrite("memory://", backend="curio")


def test_on_trace_and_lifecycle_hooks_take_sync_functions(facade: SyncDendrite) -> None:
    trace = new_trace_id()
    on_trace: list[T] = []
    final = threading.Event()
    connected: list[str] = []
    hooked = threading.Event()
    ticked = threading.Event()

    @facade.on_trace(trace)
    def every_signal(sig: Signal) -> None:
        on_trace.append(sig.type)
        if sig.type is T.FINAL:
            final.set()

    @facade.on_connect
    def hello() -> None:
        connected.append(threading.current_thread().name)
        hooked.set()

    @facade.on_schedule(every_s=0.01)
    def tick() -> None:
        ticked.set()

    facade.dispatch_and_wait(neuron="echo", input={}, scope="terminal", trace_id=trace, timeout_s=10)
    assert final.wait(10) and ticked.wait(10) and hooked.wait(10)
    assert {T.TASK, T.AGENT_OUTPUT, T.FINAL} <= set(on_trace)
    assert connected and connected[0].startswith("cosmonapse-sync-worker-")
