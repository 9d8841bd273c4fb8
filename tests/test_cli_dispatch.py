"""``cosmo dispatch`` as a subprocess against a real cosmo:// bus and a real nats-server."""

from __future__ import annotations

import json

import pytest
from cli_util import cosmo, world_fixture  # noqa: F401  (the `world` fixture)

from cosmonapse import SignalType, decode_signal

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_streams_thought_deltas_then_prints_the_reply(world: tuple[str, str], backend: str) -> None:
    url, ns = world
    done = cosmo(
        "dispatch",
        "--url",
        url,
        "-n",
        ns,
        "--neuron",
        "writer",
        "--backend",
        backend,
        "--input",
        '{"prompt": "one two three"}',
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "one two three "  # the deltas, streamed before the reply
    assert lines[1].startswith("AGENT_OUTPUT from writer (trace trc_")
    assert json.loads("\n".join(lines[2:])) == {"response": "3 words: one two three"}
    assert "cosmo dispatch: TASK evt_" in done.stderr


def test_json_prints_the_reply_signal_and_capabilities_route(world: tuple[str, str]) -> None:
    url, ns = world
    done = cosmo(
        "dispatch",
        "--url",
        url,
        "-n",
        ns,
        "--capabilities",
        "write",
        "--json",
        "--scope",
        "terminal",
        "--input",
        '{"prompt": "a b"}',
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["type"] == "FINAL" and reply["payload"]["result"] == {"response": "2 words: a b"}
    assert reply["directed"]["id"] == "writer"
    assert "a b " in done.stderr  # deltas go to stderr with --json: stdout stays one JSON value


def test_offer_bids_the_work_out(world: tuple[str, str]) -> None:
    url, ns = world
    done = cosmo(
        "dispatch",
        "--url",
        url,
        "-n",
        ns,
        "--offer",
        "--capabilities",
        "write",
        "--json",
        "--select",
        "lowest_cost",
        "--input",
        '{"prompt": "x"}',
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["payload"]["output"] == {"response": "1 words: x"}
    assert "cosmo dispatch: offer evt_" in done.stderr


def test_error_reply_exits_1_and_timeout_says_what_timed_out(world: tuple[str, str]) -> None:
    url, ns = world
    failed = cosmo("dispatch", "--url", url, "-n", ns, "--neuron", "writer", "--input", '{"fail": "boom"}')
    assert failed.returncode == 1
    assert failed.stdout.startswith("ERROR from writer") and "boom" in failed.stdout
    silent = cosmo("dispatch", "--url", url, "-n", ns, "--neuron", "nobody", "--timeout", "0.5")
    assert silent.returncode == 1
    assert "no reply from nobody within 0.5 s (trace trc_" in silent.stderr


def test_no_wait_prints_the_task_and_returns(world: tuple[str, str]) -> None:
    url, ns = world
    done = cosmo(
        "dispatch",
        "--url",
        url,
        "-n",
        ns,
        "--neuron",
        "writer",
        "--no-wait",
        "--json",
        "--input",
        '{"prompt": "fire and forget"}',
    )
    assert done.returncode == 0, done.stderr
    task = decode_signal(done.stdout)
    assert task.type is SignalType.TASK and task.neuron == "writer"
    assert task.payload == {"input": {"prompt": "fire and forget"}}


def test_bad_options_exit_2_before_touching_the_bus() -> None:
    unreachable = "cosmo://127.0.0.1:9"
    assert cosmo("dispatch", "--url", unreachable, "--neuron", "a", "--input", "[1]").returncode == 2
    assert cosmo("dispatch", "--url", unreachable, "--neuron", "a", "--input", "{nope").returncode == 2
    assert cosmo("dispatch", "--url", unreachable, "--neuron", "a", "--capabilities", "b").returncode == 2
    assert cosmo("dispatch", "--url", unreachable).returncode == 2  # seed 004: a target is required
    assert cosmo("dispatch", "--url", unreachable, "--open-call", "--neuron", "a").returncode == 2
    assert cosmo("dispatch", "--url", "http://x", "--neuron", "a").returncode == 2
    assert cosmo("dispatch", "-n", "a.b", "--neuron", "a").returncode == 2
    down = cosmo("dispatch", "--url", unreachable, "--neuron", "a", "--timeout", "2")
    assert down.returncode == 1 and "Error:" in down.stderr and "Traceback" not in down.stderr
