"""The README's three-terminal setup, run as written: bus, worker and orchestrator processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_until(proc: subprocess.Popen[str], needle: str, timeout_s: float = 30.0) -> str:
    """Read the process's output line by line until *needle* shows up (bounded by a timer)."""
    import threading

    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if needle in line:
                return line
    finally:
        timer.cancel()
    raise AssertionError(f"{needle!r} never appeared; output: {''.join(seen)!r}")


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    port = _free_port()
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "COSMONAPSE_LLM_BASE_URL")}
    e["SYNAPSE_URL"] = f"cosmo://127.0.0.1:{port}"
    e["COSMO_TEST_PORT"] = str(port)
    yield e


def test_bus_worker_orchestrator_in_three_processes(env: dict[str, str]) -> None:
    port = env["COSMO_TEST_PORT"]
    cli = [sys.executable, "-m", "cosmonapse", "synapse", "start", "memory", "--namespace=api-demo"]
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs.append(p)
        return p

    try:
        bus = start(*cli, "--port", port)
        _read_until(bus, f"cosmo://127.0.0.1:{port}")
        worker = start(sys.executable, "examples/bus/worker.py")
        _read_until(worker, "worker ready")
        done = subprocess.run(
            [sys.executable, "examples/bus/orchestrator.py", "What is a Dendrite?"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "What is a Dendrite? " in done.stdout  # the streamed THOUGHT_DELTAs
        assert f"[AGENT_OUTPUT] worker {worker.pid} heard 4 words: What is a Dendrite?" in done.stdout
        bus.send_signal(signal.SIGTERM)
        assert bus.wait(timeout=20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=20)
            if p.stdout is not None:
                p.stdout.close()
