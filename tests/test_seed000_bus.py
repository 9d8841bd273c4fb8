"""Seed 000 as a user runs it: the bus, the worker, then the Flask orchestrator with its decorators.

Three processes on a ``cosmo://`` dev bus, started in the seed's order.  The
orchestrator attaches the seed's decorators after connecting (from the main
thread, while the Dendrite's loop runs in a background thread) and sends one
prompt with ``on_trace`` + ``dispatch_and_wait``.  What it prints must be what
the seed promises: the worker's registration (it joined before the
orchestrator: DISCOVER), capability-filtered outputs, every Signal of the
trace in order, the tool's name both ways and the tokens in order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from seed000_worker import ANSWER
from test_examples_bus import _free_port, _read_until

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def bus() -> Iterator[tuple[str, dict[str, str]]]:
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "COSMONAPSE_LLM_BASE_URL")}
    env["SYNAPSE_URL"] = f"cosmo://127.0.0.1:{port}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    cli = [sys.executable, "-m", "cosmonapse", "synapse", "start", "memory", "--namespace=api-demo"]
    proc = subprocess.Popen(
        [*cli, "--port", port], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _read_until(proc, f"cosmo://127.0.0.1:{port}")
        yield env["SYNAPSE_URL"], env
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_seed_000_decorators_print_what_the_seed_promises(
    bus: tuple[str, dict[str, str]], worker_backend: str
) -> None:
    _, env = bus
    worker = subprocess.Popen(
        [sys.executable, "tests/seed000_worker.py", worker_backend],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _read_until(worker, "worker ready")
        done = subprocess.run(
            [sys.executable, "tests/seed000_orchestrator.py", "What is a Dendrite?"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        worker.kill()
        worker.wait(timeout=20)
        assert worker.stdout is not None
        worker.stdout.close()
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    def printed(line: str) -> int:
        """How often *line* was printed whole; a streamed token (end="") may precede it."""
        return out.count(line + "\n")

    # registrations: the worker was there first; the late decorator still heard it (DISCOVER)
    assert printed("worker joined: worker  caps=['chat', 'text-generation']") >= 1

    # capability- and neuron-filtered outputs fire once each; a filter nobody matches stays silent
    assert printed("worker done: worker") == 1
    assert printed("text-generation done: worker") == 1
    assert "vision" not in out
    assert len(re.findall(r"\[trc_\w+\] output from worker\n", out)) == 1

    # every Signal of the trace, in the order it happened
    trace = re.findall(r"  \[(\w+) *\] (\S+)\n", out)
    tokens = ANSWER.split(" ")
    expected = ["TASK"] + ["THOUGHT_DELTA"] * len(tokens) + ["TOOL_CALL", "TOOL_RESULT", "AGENT_OUTPUT"]
    assert [t for t, _ in trace] == expected
    assert {who for _, who in trace} == {"worker"}

    # the tool's name, both ways (seed 000 reads payload.tool_name)
    assert printed("  tool → word_count") == 1 and printed("  tool ← word_count") == 1

    # the tokens, printed as they came (end=""), in order: what is left once the lines the
    # other handlers printed (each written whole, on the Dendrite's loop thread) are taken out;
    # the orchestrator prints the reply once every handler is done
    streamed = re.sub(PRINTED_LINES, "", out.split("reply:", 1)[0])
    assert streamed == ANSWER
    assert f"reply: {ANSWER}\n" in out


PRINTED_LINES = re.compile(
    r"worker joined: .*\n|heartbeat: .*\n|  \[\w+ *\] \S+\n|  tool [→←] .*\n"
    r"|\[trc_\w+\] output from .*\n|worker done: .*\n|text-generation done: .*\n"
)
