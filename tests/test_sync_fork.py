"""fork() after the facade started: the child gets its own portal and connection; the parent is untouched."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cosmonapse import Axon, Signal, SignalType
from cosmonapse_sync import SyncDendrite
from cosmonapse_sync.testing import ChildProcess, dev_bus

T = SignalType


def whoami(input: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "input": input}


def in_child(fn: Callable[[], Any], deadline_s: float = 30.0) -> Any:
    """Run *fn* in a forked child; its JSON result (or its traceback as an assertion)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps({"ok": fn()}).encode())
            code = 0
        except BaseException:
            os.write(w, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    end = time.monotonic() + deadline_s
    try:
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the forked child hung for {deadline_s} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"error": "no output"}')
    assert "error" not in result, result["error"]
    return result["ok"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_child_builds_a_fresh_portal_and_the_parent_keeps_working(backend: str) -> None:
    f = SyncDendrite("memory://", backend=backend, namespace="fork", dendrite_id="web")
    f.attach_axon(Axon(neuron_id="who", neuron_fn=whoami))
    seen_in_handler = threading.Event()
    f.on_agent_output(lambda sig: seen_in_handler.set())
    try:
        before = f.dispatch_and_wait(neuron="who", input={"n": 0}, timeout_s=10)
        assert before.payload["output"]["pid"] == os.getpid()
        parent_portal = f.portal_thread
        assert parent_portal is not None

        def child() -> dict[str, Any]:
            assert not f.running  # the parent's loop did not come along
            got = threading.Event()
            f.on_final(lambda sig: got.set())  # a handler added in the child, before its first call
            reply = f.dispatch_and_wait(neuron="who", input={"n": 1}, scope="terminal", timeout_s=10)
            portal = f.portal_thread
            assert portal is not None and got.wait(10)
            return {
                "reply_pid": reply.payload["result"]["pid"],
                "pid": os.getpid(),
                "portal_native_id": portal.native_id,
                "closed": f.close(),
                "threads": [t.name for t in threading.enumerate()],
            }

        out = in_child(child)
        assert out["pid"] != os.getpid() and out["reply_pid"] == out["pid"]
        assert out["portal_native_id"] != parent_portal.native_id
        assert out["closed"] is True and out["threads"] == ["MainThread"]
        # The parent's portal and connection are untouched.
        assert f.portal_thread is parent_portal and parent_portal.is_alive()
        after = f.dispatch_and_wait(neuron="who", input={"n": 2}, timeout_s=10)
        assert after.payload["output"] == {"pid": os.getpid(), "input": {"n": 2}}
        assert seen_in_handler.wait(10)
    finally:
        f.close()


def test_locks_held_by_other_threads_at_fork_time_do_not_deadlock_the_child() -> None:
    f = SyncDendrite("memory://", namespace="forklock")
    f.attach_axon(Axon(neuron_id="who", neuron_fn=whoami))
    f.start()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with f._portal._lock, f._records:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)

        def child() -> int:
            f.attach_axon(Axon(neuron_id="late", neuron_fn=whoami))  # takes the records lock
            return f.dispatch_and_wait(neuron="late", input={}, timeout_s=10).payload["output"]["pid"]

        assert in_child(child) != os.getpid()
    finally:
        release.set()
        holder.join(10)
        f.close()


@pytest.mark.slow
def test_on_a_real_bus_parent_and_child_each_register_and_serve(tmp_path: Path) -> None:
    with dev_bus("fork") as url:
        host = SyncDendrite(url, namespace="fork", dendrite_id="host", role="worker")
        host.attach_axon(Axon(neuron_id="who", neuron_fn=whoami))
        host.start()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(go_w)
                host.start()  # a new connection; the Axon REGISTERs again from here
                select.select([go_r], [], [], 30)  # serve until the parent is done
                code = 0 if host.close() else 2
            finally:
                os._exit(code)
        os.close(go_r)
        orch = SyncDendrite(url, namespace="fork", dendrite_id="orch")
        try:
            registered = threading.Event()
            orch.on_register_signal(neuron="who")(lambda sig: registered.set())
            orch.start()
            orch.discover(neuron="who")  # both hosts answer with a REGISTER
            assert registered.wait(10)
            pids: set[int] = set()
            end = time.monotonic() + 20
            while len(pids) < 2 and time.monotonic() < end:  # the child may still be connecting
                with orch.dispatch(neuron="who", input={}) as pw:
                    for _ in range(2):
                        try:
                            pids.add(pw.wait(timeout_s=2).payload["output"]["pid"])
                        except TimeoutError:
                            break
            assert pids == {os.getpid(), pid}
            assert host.running
        finally:
            os.write(go_w, b"x")
            os.close(go_w)
            _, status = os.waitpid(pid, 0)
            orch.close()
            host.close()
        assert os.waitstatus_to_exitcode(status) == 0


EXITER = textwrap.dedent(
    """
    import os, sys, threading
    from cosmonapse import Axon
    from cosmonapse_sync import SyncDendrite

    facade = SyncDendrite(os.environ["SYNAPSE_URL"], namespace="bye", dendrite_id="leaver-host",
                          close_timeout_s=1.0, shutdown_timeout_s=0.5)

    running = threading.Event()

    def stuck(input, context):
        running.set()
        threading.Event().wait()  # ignores cancellation: only the close deadline ends this

    facade.attach_axon(Axon(neuron_id="leaver", neuron_fn=stuck))
    facade.start()
    if sys.argv[1] == "stuck":
        facade.dispatch_task(neuron="leaver", input={})
        assert running.wait(10)
    print("ready", flush=True)  # and exit without close(): atexit closes the facade
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["clean", "stuck"])
def test_interpreter_exit_deregisters_within_a_bounded_deadline(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    with dev_bus("bye") as url, SyncDendrite(url, namespace="bye", dendrite_id="watch") as watch:
        gone = threading.Event()
        started = threading.Event()
        byes: list[Signal] = []

        @watch.on_deregister_signal(neuron="leaver")
        def on_bye(sig: Signal) -> None:
            byes.append(sig)
            gone.set()

        watch.on_register_signal(neuron="leaver")(lambda sig: started.set())
        t0 = time.monotonic()
        child = ChildProcess([sys.executable, str(script), mode], env={"SYNAPSE_URL": url})
        child.start()
        child.wait_for("ready", 30)
        assert child.proc is not None
        code = child.proc.wait(20)
        elapsed = time.monotonic() - t0
        child.stop()
        assert code == 0, child.output
        assert started.wait(10)
        if mode == "clean":
            assert gone.wait(10), "no DEREGISTER at exit"
        assert elapsed < 15, f"exit took {elapsed:.1f} s"
