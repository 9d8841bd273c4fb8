"""``cosmo validate``: files, stdin and --live on real buses; what is wrong and where."""

from __future__ import annotations

import json
import socket
from importlib import resources
from pathlib import Path

import orjson
import pytest
from cli_util import cosmo, cosmo_child, world_fixture  # noqa: F401  (the `world` fixture)

from cosmonapse.cli.validate import check_frame

VECTORS = resources.files("cosmonapse.testing") / "vectors"


def test_every_reference_vector_is_judged_as_the_reference_does(tmp_path: Path) -> None:
    valid = cosmo("validate", str(VECTORS / "valid.jsonl"))
    assert valid.returncode == 0, valid.stdout
    assert "error" not in valid.stdout
    invalid = tmp_path / "invalid.jsonl"
    rows = [json.loads(line) for line in (VECTORS / "invalid.jsonl").read_text().splitlines() if line.strip()]
    invalid.write_text("\n".join(r["frame"] for r in rows) + "\n")
    done = cosmo("validate", str(invalid), "--json")
    assert done.returncode == 1
    verdicts = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(verdicts) == len(rows) and not any(v["ok"] for v in verdicts)
    assert all(v["errors"][0]["message"] for v in verdicts)
    lenient_lines = (VECTORS / "lenient.jsonl").read_text().splitlines()
    lenient = [json.loads(line)["frame"] for line in lenient_lines if line]
    assert all(check_frame(f, "x").ok for f in lenient)
    assert any(not check_frame(f, "x", strict=True).ok for f in lenient)


def test_payload_rules_name_the_key_and_the_line(tmp_path: Path) -> None:
    frames = [
        {"v": "1", "id": "evt_x", "trace_id": "trc_y", "type": "TASK", "payload": {}},
        {"type": "ERROR", "id": "evt_1", "trace_id": "trc_1", "ts": 1, "payload": {"code": 1, "message": ""}},
        {"type": "IMPRINT", "payload": {"op": "explode", "entry": {}}, "extra": True},
    ]
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(frames))
    done = cosmo("validate", str(path))
    assert done.returncode == 1
    out = done.stdout
    assert f"{path}[0]: error: payload.input: is required in a TASK" in out
    assert f"{path}[0]: warning: id: not a ULID id ('evt_x')" in out
    assert f"{path}[1]: error: payload.code: must be string, got integer" in out
    assert f"{path}[1]: error: payload.recoverable: is required in a ERROR" in out
    ops = "add, append, merge, upsert, delete"
    assert f"{path}[2]: error: payload.op: must be one of {ops}, got 'explode'" in out
    assert "unknown top-level keys ignored by receivers: ['extra']" in out
    assert "3 frames: 0 valid, 3 invalid" in done.stderr


def test_stdin_and_not_json_and_usage() -> None:
    done = cosmo("validate", "-", input='{"type": "HEARTBEAT", "payload": {"status": "ok"}}\nnot json\n')
    assert done.returncode == 1
    assert "<stdin>:2: error: not JSON" in done.stdout
    assert "<stdin>:1: warning: id: missing" in done.stdout
    assert cosmo("validate").returncode == 2
    assert cosmo("validate", "x.jsonl", "--live").returncode == 2
    assert cosmo("validate", "/no/such/file").returncode == 2


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_live_checks_real_traffic(world: tuple[str, str], backend: str) -> None:
    url, ns = world
    args = ("validate", "--live", "--url", url, "-n", ns, "--count", "4", "--json", "--backend", backend)
    with cosmo_child(*args, ready="cosmo validate: checking frames") as live:
        assert (
            cosmo(
                "dispatch", "--url", url, "-n", ns, "--neuron", "writer", "-q", "--input", '{"prompt": "a b"}'
            ).returncode
            == 0
        )
        live.wait_for(r"\"type\":\"AGENT_OUTPUT\"", 30)
        assert live.proc is not None and live.proc.wait(timeout=30) == 0  # --count 4: it exits by itself
    verdicts = [json.loads(line) for line in live.output.splitlines() if line.startswith("{")]
    assert [v["type"] for v in verdicts] == ["TASK", "THOUGHT_DELTA", "THOUGHT_DELTA", "AGENT_OUTPUT"]
    assert all(v["ok"] for v in verdicts)


@pytest.mark.slow
def test_live_on_the_dev_bus_sees_frames_the_sdk_would_drop(world: tuple[str, str]) -> None:
    url, ns = world
    if not url.startswith("cosmo://"):
        pytest.skip("raw frames are a dev-bus feature; NATS goes through the Synapse API")
    args = ("validate", "--live", "--url", url, "-n", ns, "--count", "1")
    with cosmo_child(*args, ready="cosmo validate: checking frames") as live:
        host, port = url.removeprefix("cosmo://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            frame = orjson.dumps({"type": "TASK", "id": "nope", "payload": {}}).decode()
            pub = {"op": "pub", "subject": f"cosmonapse.{ns}.TASK", "frame": frame}
            raw.sendall(orjson.dumps(pub) + b"\n")
            live.wait_for("1 frames", 30)
        assert live.proc is not None and live.proc.wait(timeout=30) == 1
    problem = "error: id: must be a string starting with 'evt_', got 'nope'"
    assert f"cosmonapse.{ns}.TASK: {problem}" in live.output
