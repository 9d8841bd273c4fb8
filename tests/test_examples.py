"""The shipped examples and the README demo run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "COSMONAPSE_LLM_BASE_URL")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_seed_001_program_runs_on_both_event_loops(backend: str) -> None:
    done = _run("examples/hello_memory.py", backend)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "[AGENT_OUTPUT] Hello! You said: Say hello to a project called Cosmonapse in one line."
    )


def test_main_demo_runs_without_a_token() -> None:
    done = _run("-m", "cosmonapse.demo", "one two three")
    assert done.returncode == 0, done.stderr
    assert "worker Neuron: function" in done.stdout
    assert "[FINAL] 3 words, 13 characters: 'one two three'" in done.stdout
