"""``cosmo doppler`` (the terminal tail) as a subprocess on real buses; its line format."""

from __future__ import annotations

import json
import subprocess

import pytest
from cli_util import COSMO, cosmo, cosmo_child, world_fixture  # noqa: F401  (the `world` fixture)

from cosmonapse import Directed, Signal, SignalType
from cosmonapse.cli.doppler import short_payload, tail_line


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tails_every_signal_of_a_trace_tasks_included(world: tuple[str, str], backend: str) -> None:
    url, ns = world
    args = ("doppler", "--url", url, "-n", ns, "--json", "--count", "6", "--backend", backend)
    with cosmo_child(*args, ready="cosmo doppler: tailing") as tail:
        sent = cosmo(
            "dispatch", "--url", url, "-n", ns, "--neuron", "writer", "-q", "--input", '{"prompt":"x y"}'
        )
        assert sent.returncode == 0, sent.stderr
        tail.wait_for(r'"type":"FINAL"|"type":"AGENT_OUTPUT"', 30)
        code = tail.stop()
    frames = [json.loads(line) for line in tail.output.splitlines() if line.startswith("{")]
    types = [f["type"] for f in frames]
    assert types[:4] == ["TASK", "THOUGHT_DELTA", "THOUGHT_DELTA", "AGENT_OUTPUT"], types
    assert {f["trace_id"] for f in frames[:4]} == {frames[0]["trace_id"]}
    assert code == 0


@pytest.mark.slow
def test_filters_by_type_neuron_and_trace_and_exits_after_count(world: tuple[str, str]) -> None:
    url, ns = world
    args = ("doppler", "--url", url, "-n", ns, "-t", "agent_output", "-t", "ERROR", "--neuron", "writer")
    args += ("-c", "2")
    with cosmo_child(*args, ready="cosmo doppler: tailing") as tail:
        for prompt in ("first one", "second"):
            assert (
                cosmo(
                    "dispatch",
                    "--url",
                    url,
                    "-n",
                    ns,
                    "--neuron",
                    "writer",
                    "-q",
                    "--input",
                    json.dumps({"prompt": prompt}),
                ).returncode
                == 0
            )
        tail.wait_for(r"AGENT_OUTPUT.*2 words.*\n(.|\n)*AGENT_OUTPUT.*1 words", 30)
        assert tail.proc is not None and tail.proc.wait(timeout=30) == 0  # --count 2: it exits by itself
    lines = [line for line in tail.output.splitlines() if "AGENT_OUTPUT" in line or "THOUGHT" in line]
    assert len(lines) == 2 and all(" writer " in line for line in lines)


def test_line_format_is_time_type_neuron_trace_payload() -> None:
    sig = Signal(
        type=SignalType.TOOL_CALL,
        trace_id="trc_01M8N89NZRG8GNAAV71M35XXT8",
        directed=Directed("worker"),
        payload={"tool": "count", "tool_name": "word_counter", "args": {"text": "a " * 100}},
        ts="2026-11-30T03:34:39.373700Z",
    )
    line = tail_line(sig)
    assert line.split()[:4] == ["03:34:39.373", "TOOL_CALL", "worker", "trc_01M8N89NZRG8GNAAV71M35XXT8"]
    assert line.index("worker") == 34 and line.index("trc_") == 53
    assert line.endswith("…") and "word_counter {" in line
    assert short_payload(Signal(type=SignalType.THOUGHT_DELTA, payload={"delta": "hi\n"})) == "'hi\\n'"


def test_unknown_type_and_bad_url_exit_2() -> None:
    assert cosmo("doppler", "-t", "NOPE").returncode == 2
    assert cosmo("doppler", "--url", "memcached://x").returncode == 2


@pytest.mark.slow
def test_exits_quietly_when_its_reader_goes_away(world: tuple[str, str]) -> None:
    """``cosmo doppler | head -1``: once the pipe closes, the tail ends (status 0, no traceback)."""
    url, ns = world
    proc = subprocess.Popen(
        [*COSMO, "doppler", "--url", url, "-n", ns], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert "tailing" in proc.stderr.readline()
        prompt = json.dumps({"prompt": "one two three four"})
        assert (
            cosmo(
                "dispatch", "--url", url, "-n", ns, "--neuron", "writer", "-q", "--input", prompt
            ).returncode
            == 0
        )
        assert " TASK " in proc.stdout.readline()
        proc.stdout.close()  # the reader leaves; the next lines hit a closed pipe
        assert (
            cosmo(
                "dispatch", "--url", url, "-n", ns, "--neuron", "writer", "-q", "--input", prompt
            ).returncode
            == 0
        )
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
