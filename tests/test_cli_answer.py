"""``cosmo answer``: CLARIFICATION / PERMISSION requests answered from a terminal (real buses)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cli_util import COSMO, cosmo, cosmo_child, world_fixture  # noqa: F401  (the `world` fixture)

pytestmark = pytest.mark.slow


@contextmanager
def answering(*args: str, typed: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """``cosmo answer ARGS`` with *typed* waiting on its stdin; yields once it listens."""
    proc = subprocess.Popen(
        [*COSMO, "answer", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if typed is not None:
            proc.stdin.write(typed)
            proc.stdin.flush()
        while "cosmo answer: waiting for requests" not in proc.stdout.readline():  # bounded by pytest-timeout
            pass
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def finish(proc: subprocess.Popen[str]) -> str:
    """The rest of the output, once the process has exited."""
    assert proc.stdout is not None
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    out = proc.stdout.read()
    proc.wait(timeout=30)
    return out


def record_of(out: str) -> dict:
    """The first ``{"request": ..., "answer": ...}`` line (after any "answer> " prompt, stderr is merged)."""
    line = next(line for line in out.splitlines() if '{"request"' in line)
    return json.loads(line[line.index('{"request"') :])


def ask(url: str, ns: str, neuron: str) -> dict:
    done = cosmo("dispatch", "--url", url, "-n", ns, "--neuron", neuron, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_typed_answer_goes_back_as_clarification_answer(world: tuple[str, str], backend: str) -> None:
    url, ns = world
    args = ("--url", url, "-n", ns, "--once", "--json", "--backend", backend)
    with answering(*args, typed="metric\n") as proc:
        request = ask(url, ns, "asker")
        out = finish(proc)
    assert proc.returncode == 0, out
    assert request["type"] == "CLARIFICATION", request
    record = record_of(out)
    assert record["request"]["id"] == request["id"]
    sent = record["answer"]
    assert sent["type"] == "CLARIFICATION_ANSWER" and sent["parent_id"] == request["id"]
    assert sent["trace_id"] == request["trace_id"] and sent["payload"] == {"answer": "metric"}


def test_redispatch_sends_a_task_the_neuron_answers(world: tuple[str, str]) -> None:
    url, ns = world
    with answering("--url", url, "-n", ns, "--once", "--redispatch", "--answer", '{"unit": "C"}') as proc:
        watch = ("doppler", "--url", url, "-n", ns, "-t", "AGENT_OUTPUT", "--neuron", "asker", "-c", "1")
        watch += ("--json",)
        with cosmo_child(*watch, ready="cosmo doppler: tailing") as tail:
            request = ask(url, ns, "asker")
            tail.wait_for('"answer_was"', 30)
        out = finish(proc)
    assert proc.returncode == 0, out
    assert "CLARIFICATION from asker" in out and "question: Which unit, C or F?" in out
    assert "→ sent TASK" in out
    reply = json.loads(next(line for line in tail.output.splitlines() if line.startswith("{")))
    assert reply["trace_id"] == request["trace_id"]
    assert reply["payload"]["output"] == {"answer_was": {"unit": "C"}}


DECISIONS = [(("--deny", "--reason", "not today"), False), (("--grant",), True)]


@pytest.mark.parametrize(("how", "granted"), DECISIONS)
def test_permission_decisions(world: tuple[str, str], how: tuple[str, ...], granted: bool) -> None:
    url, ns = world
    with answering("--url", url, "-n", ns, "--once", "--json", *how) as proc:
        request = ask(url, ns, "guard")
        out = finish(proc)
    assert proc.returncode == 0, out
    assert request["type"] == "PERMISSION" and request["payload"]["action"] == "delete /tmp/scratch"
    sent = record_of(out)["answer"]
    assert sent["type"] == "PERMISSION_DECISION" and sent["parent_id"] == request["id"]
    assert sent["payload"]["granted"] is granted
    if not granted:
        assert sent["payload"]["reason"] == "not today"


def test_typed_permission_and_closed_stdin(world: tuple[str, str]) -> None:
    url, ns = world
    with answering("--url", url, "-n", ns, "--once", "--json", typed="y\n") as proc:
        ask(url, ns, "guard")
        out = finish(proc)
    sent = record_of(out)["answer"]
    assert proc.returncode == 0 and sent["payload"]["granted"] is True
    with answering("--url", url, "-n", ns, "--once", typed="") as proc:
        assert proc.stdin is not None
        proc.stdin.close()
        ask(url, ns, "asker")
        out = finish(proc)
    assert proc.returncode == 1 and "stdin closed before an answer was given" in out
