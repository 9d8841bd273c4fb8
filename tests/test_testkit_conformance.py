"""``cosmo conformance``: our worker passes over cosmo:// and NATS; golden transcripts pass; broken ones fail
the rule they break; ``pytest --cosmo-conformance`` runs the same rules as tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from devbus_util import cosmo_start
from nats_util import NatsServer, nats_server_binary

from cosmonapse import (
    Axon,
    Dendrite,
    Directed,
    NeuronContext,
    Signal,
    SignalType,
    decode_signal,
    encode_signal,
)
from cosmonapse.testing import TestSynapse
from cosmonapse.testing.conformance import RULES, ConformanceOptions, Frame, Report, Transcript, judge, record

T = SignalType
HERE = Path(__file__).resolve().parent
GOLDEN = sorted((HERE / "testkit_transcripts").glob("*.jsonl"))
WORKER = f"{sys.executable} {HERE / 'testkit_worker.py'}"
CLI_ARGS = ["--spawn", WORKER, "--slow-input", '{"sleep": 5}', "--heartbeat-wait", "3", "--json"]


def cosmo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosmonapse", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["outcome"] for r in report["rules"]}


# -- live buses -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the bus and the check are subprocesses
async def test_our_worker_passes_every_rule_over_the_dev_bus(anyio_backend: str) -> None:
    async with cosmo_start("--namespace", "conf") as (_, url, _out):
        done = await anyio.to_thread.run_sync(lambda: cosmo(url, "-n", "conf", *CLI_ARGS))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert outcomes(report) == dict.fromkeys(RULES, "pass"), report


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    if nats_server_binary() is None:
        pytest.skip("nats-server not installed")
    with NatsServer() as server:
        yield server.url


def test_our_worker_passes_every_rule_over_nats(nats_url: str) -> None:
    done = cosmo(nats_url, "-n", "conf", *CLI_ARGS)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert outcomes(report) == dict.fromkeys(RULES, "pass"), report


def test_pytest_runs_the_rules_as_tests(nats_url: str, tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "testkit_worker.py")],
        env={**os.environ, "COSMO_SYNAPSE_URL": nats_url, "COSMO_NAMESPACE": "viapytest"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        args = ["-q", "-p", "no:cacheprovider", "-rs", "--cosmo-conformance", nats_url]
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *args, "--cosmo-namespace", "viapytest"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    # heartbeat waits for nothing by default; deregister needs a worker the check starts itself
    assert "7 passed, 2 skipped" in done.stdout, done.stdout


def test_an_unreachable_bus_or_no_url_is_a_clear_error(tmp_path: Path) -> None:
    done = cosmo("cosmo://127.0.0.1:1", "-n", "x", "--timeout", "1")
    assert done.returncode == 1 and "cannot reach" in done.stderr, done.stderr
    done = cosmo("-n", "x")
    assert done.returncode == 2 and "--transcript" in done.stderr


# -- in-process: a Synapse as the tap, broken peers -------------------------------------------------


async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    if "sleep" in input:
        await anyio.sleep(input["sleep"])
    return {"echo": input}


@pytest.mark.anyio
async def test_a_run_on_an_in_process_bus() -> None:
    bus = TestSynapse()
    async with bus.synapse("worker") as w, bus.synapse("checker") as c:
        worker = Dendrite(synapse=w, namespace="ip", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon("echo", echo, ["echo"]))
        async with worker:
            options = ConformanceOptions(
                timeout_s=2, discover_wait_s=0.2, slow_input={"sleep": 5}, quiet_s=0.1
            )
            report = judge(await record(c, "ip", options))
    assert report.passed, report.render()
    assert {r.rule for r in report.results if r.outcome == "skip"} == {"heartbeat", "deregister"}


@pytest.mark.anyio
async def test_a_peer_that_ignores_stop_and_replies_to_the_wrong_task_fails_those_rules() -> None:
    bus = TestSynapse()
    reports: list[Report] = []
    async with bus.synapse("peer") as peer, bus.synapse("checker") as c, anyio.create_task_group() as tg:
        seen: list[Signal] = []

        async def reply(task: Signal) -> None:
            await anyio.sleep(0.3)  # allowed: works a while, deaf to STOP
            parent = seen[0].id  # and answers the first TASK it ever saw
            out = Signal(
                type=T.AGENT_OUTPUT,
                trace_id=task.trace_id,
                parent_id=parent,
                directed=Directed("rogue"),
                payload={"output": {}},
            )
            await peer.publish("cosmonapse.ip.AGENT_OUTPUT", out)

        async def on(sig: Signal) -> None:
            if sig.type is T.DISCOVER:
                reg = Signal(
                    type=T.REGISTER, directed=Directed("rogue", "neuron"), payload={"role": "neuron"}
                )
                await peer.publish("cosmonapse.ip.REGISTER", reg)
            elif sig.type is T.TASK:
                seen.append(sig)
                tg.start_soon(reply, sig)

        await peer.subscribe(["cosmonapse.ip.DISCOVER", "cosmonapse.ip.TASK"], on)
        options = ConformanceOptions(timeout_s=1, discover_wait_s=0.1, stop_after_s=0.1, quiet_s=0.5)
        reports.append(judge(await record(c, "ip", options)))
        tg.cancel_scope.cancel()
    report = reports[0]
    got = {r.rule: r for r in report.results}
    assert got["register"].outcome == "fail" and "capabilities" in got["register"].detail
    # every reply is parented to the first TASK it saw: that one has three, the others none
    assert got["task_reply"].outcome == "fail" and "3 replies to one TASK" in got["task_reply"].detail
    assert got["finalize"].outcome == "fail" and "no reply" in got["finalize"].detail
    assert got["stop"].outcome == "fail" and "no STOPPED" in got["stop"].detail
    assert not report.passed


# -- golden transcripts -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_transcripts_pass_every_rule(path: Path) -> None:
    report = judge(Transcript.load(path))
    assert {r.rule: r.outcome for r in report.results} == dict.fromkeys(RULES, "pass"), report.render()
    done = cosmo("--transcript", str(path))
    assert done.returncode == 0 and "9 passed, 0 failed, 0 skipped" in done.stdout


def mutate(path: Path, change: Callable[[list[Frame]], list[Frame]]) -> Transcript:
    t = Transcript.load(path)
    return Transcript(t.url, t.namespace, change(list(t.frames)), t.spawned)


def frames_of(frames: list[Frame], stype: SignalType) -> list[int]:
    return [i for i, f in enumerate(frames) if json.loads(f.text)["type"] == stype.value]


def rewrite(frame: Frame, **changes: Any) -> Frame:
    return Frame(frame.t, frame.subject, encode_signal(decode_signal(frame.text).evolve(**changes)).decode())


def drop_types(*types: SignalType) -> Callable[[list[Frame]], list[Frame]]:
    return lambda fs: [f for f in fs if json.loads(f.text)["type"] not in {t.value for t in types}]


def without_ts(fs: list[Frame]) -> list[Frame]:
    i = frames_of(fs, T.AGENT_OUTPUT)[0]
    raw = json.loads(fs[i].text)
    del raw["ts"]
    fs[i] = Frame(fs[i].t, fs[i].subject, json.dumps(raw))
    return fs


def wrong_parent(fs: list[Frame]) -> list[Frame]:
    i = frames_of(fs, T.AGENT_OUTPUT)[0]
    fs[i] = rewrite(fs[i], parent_id="evt_01M8NAP39483GKGS3MBXCNRBHZ")
    return fs


def second_final(fs: list[Frame]) -> list[Frame]:
    i = frames_of(fs, T.FINAL)[0]
    again = decode_signal(fs[i].text).evolve(id="evt_01M8NAP39483GKGS3MBXCNRBH0")
    return [*fs[: i + 1], Frame(fs[i].t, fs[i].subject, encode_signal(again).decode()), *fs[i + 1 :]]


def reply_after_stopped(fs: list[Frame]) -> list[Frame]:
    stopped = decode_signal(fs[frames_of(fs, T.STOPPED)[-1]].text)
    late = Signal(
        type=T.AGENT_OUTPUT,
        trace_id=stopped.trace_id,
        parent_id=stopped.parent_id,
        directed=Directed("echo"),
        payload={"output": {}},
    )
    return [*fs, Frame(fs[-1].t + 0.1, "cosmonapse.golden.AGENT_OUTPUT", encode_signal(late).decode())]


def caps_mismatch(fs: list[Frame]) -> list[Frame]:
    i = frames_of(fs, T.REGISTER)[0]
    fs[i] = rewrite(fs[i], payload={"role": "neuron", "capabilities": ["other"]})
    return fs


MUTATIONS = {
    "envelope": without_ts,
    "task_reply": wrong_parent,
    "finalize": second_final,
    "stop": reply_after_stopped,
    "register": caps_mismatch,
    "deregister": drop_types(T.DEREGISTER),
    "heartbeat": drop_types(T.HEARTBEAT),
}


@pytest.mark.parametrize("rule", sorted(MUTATIONS))
def test_a_broken_transcript_fails_the_rule_it_breaks(rule: str) -> None:
    report = judge(mutate(GOLDEN[0], MUTATIONS[rule]))
    result = report.result(rule)
    expected = "skip" if rule == "heartbeat" else "fail"
    assert result.outcome == expected, report.render()
    assert report.passed is (expected == "skip")


def test_no_stopped_and_no_discover_answer_fail_too() -> None:
    report = judge(mutate(GOLDEN[0], drop_types(T.STOPPED)))
    assert report.result("stop").outcome == "fail"
    report = judge(mutate(GOLDEN[0], drop_types(T.REGISTER)))
    assert report.result("discover").outcome == "fail"
    assert report.result("register").outcome == "skip"


def test_transcripts_round_trip(tmp_path: Path) -> None:
    t = Transcript.load(GOLDEN[0])
    t.save(tmp_path / "t.jsonl")
    assert Transcript.load(tmp_path / "t.jsonl") == t
    with pytest.raises(ValueError, match="header"):
        Transcript.loads('{"t": 0}\n')
