"""The pytest plugin as a user meets it: a fresh project, its fixtures, the opt-in backends, leak checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_in(tmp_path: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )


USER_TESTS = """
    import pytest
    from cosmonapse import Axon, SignalType
    from cosmonapse.testing import FakeLLM

    pytestmark = pytest.mark.anyio


    async def echo(input, ctx):
        return {"echo": input}


    @pytest.fixture
    def cosmo_axons():
        return [Axon("echo", echo, ["echo"])]


    async def test_pair_and_recorder(cosmo_no_leaks, cosmo_recorder, cosmo_pair, anyio_backend):
        reply = await cosmo_pair.orchestrator.dispatch_and_wait(neuron="echo", input={"n": 1}, finalize=True)
        assert reply.payload["output"] == {"echo": {"n": 1}}
        await cosmo_recorder.wait_for_trace(reply.trace_id, "TASK", "AGENT_OUTPUT<TASK", "FINAL<AGENT_OUTPUT")
        cosmo_recorder.assert_trace(reply.trace_id, "TASK", "AGENT_OUTPUT<TASK", terminals=1)
        print("backend", anyio_backend)


    async def test_unmodified_code_meets_on_the_bus(cosmo_bus, cosmo_pair):
        from cosmonapse import Dendrite, connect_synapse

        synapse = await connect_synapse("nats://somewhere:4222")
        async with synapse, Dendrite(synapse=synapse, namespace="test") as orch:
            reply = await orch.dispatch_and_wait(capabilities=["echo"], input={}, timeout_s=5)
        assert reply.type is SignalType.AGENT_OUTPUT


    def test_fake_llm(cosmo_fake_llm):
        assert isinstance(cosmo_fake_llm, FakeLLM)
"""


def test_the_fixtures_in_a_users_project_on_both_backends(tmp_path: Path) -> None:
    done = pytest_in(tmp_path, {"test_user.py": USER_TESTS}, "-s", "--cosmo-backends=asyncio,trio")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout, done.stdout
    assert "backend asyncio" in done.stdout and "backend trio" in done.stdout


def test_the_backends_can_be_chosen_on_the_command_line_or_in_an_ini(tmp_path: Path) -> None:
    done = pytest_in(tmp_path, {"test_user.py": USER_TESTS}, "-s", "--cosmo-backends=asyncio")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 2 deselected" in done.stdout and "backend trio" not in done.stdout
    ini = "[pytest]\ncosmo_backends = trio\n"
    done = pytest_in(tmp_path, {"test_user.py": USER_TESTS, "pytest.ini": ini}, "-s")
    assert "3 passed" in done.stdout and "backend asyncio" not in done.stdout, done.stdout + done.stderr
    done = pytest_in(tmp_path, {"test_user.py": USER_TESTS}, "--cosmo-backends=curio")
    assert done.returncode != 0 and "unknown backend" in done.stderr


LEAKY = """
    import threading, time
    import anyio
    import pytest
    from cosmonapse import Dendrite, MemorySynapse

    pytestmark = pytest.mark.anyio
    done = threading.Event()


    async def test_leaves_a_dendrite_running(cosmo_no_leaks):
        synapse = MemorySynapse()
        await synapse.connect()
        await Dendrite(synapse=synapse, namespace="leak").start()  # never stopped


    def helper():
        done.wait(5)


    async def test_leaves_a_thread_busy(cosmo_no_leaks):
        threading.Thread(target=helper, name="busy-helper").start()


    async def test_clean(cosmo_no_leaks):
        await anyio.to_thread.run_sync(time.sleep, 0.01)  # an idle pool thread is not a leak


    def test_release():
        done.set()
"""


def test_the_leak_check_fails_tests_that_leave_tasks_or_busy_threads(tmp_path: Path) -> None:
    done = pytest_in(tmp_path, {"test_leaky.py": LEAKY}, "--cosmo-backends=asyncio")
    out = done.stdout + done.stderr
    assert "4 passed, 3 deselected, 2 errors" in out, out
    assert "tasks left running" in out and "threads left running: ['busy-helper']" in out


def test_loading_the_plugin_changes_nothing_in_our_suite() -> None:
    args = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    files = [str(HERE / "test_dendrite.py"), str(HERE / "test_codec.py")]
    with_kit = subprocess.run([*args, *files], capture_output=True, text=True, timeout=120, cwd=HERE.parent)
    without = subprocess.run(
        [*args, "-p", "no:cosmonapse", *files], capture_output=True, text=True, timeout=120, cwd=HERE.parent
    )
    assert with_kit.returncode == 0 and without.returncode == 0
    assert with_kit.stdout.splitlines()[:-2] == without.stdout.splitlines()[:-2]


def test_the_plugin_module_imports_nothing_heavy() -> None:
    heavy = ("hypothesis", "httpx", "trio")
    code = f"import sys, cosmonapse.testing.plugin; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
