"""The Flask example end to end: dev bus, worker.py, flask_app under gunicorn gthread, concurrent clients."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cosmonapse import new_trace_id
from cosmonapse_sync.testing import ChildProcess, dev_bus, gunicorn

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with dev_bus("api-demo") as url:
        env = {"SYNAPSE_URL": url, "COSMO_NAMESPACE": "api-demo", "ASK_TIMEOUT_S": "10"}
        worker = ChildProcess([sys.executable, str(HERE / "worker.py")], ready="worker ready", env=env)
        with worker:
            app = gunicorn("flask_app:app", chdir=HERE, worker_class="gthread", threads=8, env=env)
            with app as (base, gunicorn_process):
                yield base
                assert gunicorn_process.stop() == 0
                assert "Traceback" not in gunicorn_process.output, gunicorn_process.output
            assert worker.stop() == 0
        assert "worker stopped" in worker.output


def events(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    """Parse server-sent events: yields comments as str, events as dicts of their data."""
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            yield line[1:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


@pytest.mark.slow
def test_concurrent_asks(server: str) -> None:
    prompts = [f"question number {i} " + "please " * (i % 4) for i in range(40)]
    with httpx.Client(base_url=server, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda p: client.post("/ask", json={"prompt": p}), prompts))
        missing = client.post("/ask", json={"prompt": ""})
    for prompt, reply in zip(prompts, replies, strict=True):
        assert reply.status_code == 200, reply.text
        assert reply.json()["response"] == f"{len(prompt.split())} words: {prompt}"
    assert len({r.json()["trace_id"] for r in replies}) == len(prompts)
    assert missing.status_code == 400


@pytest.mark.slow
def test_ask_stream_sends_every_signal_of_the_trace(server: str) -> None:
    with (
        httpx.Client(base_url=server, timeout=30) as client,
        client.stream("POST", "/ask/stream", json={"prompt": "one two three"}) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        got = list(events(r.iter_lines()))
    assert isinstance(got[0], str) and got[0].startswith("trace ")
    kinds = [e["type"] for e in got[1:] if isinstance(e, dict)]
    assert kinds == ["THOUGHT_DELTA"] * 3 + ["AGENT_OUTPUT", "FINAL"]
    deltas = "".join(e["payload"]["delta"] for e in got[1:4] if isinstance(e, dict))
    assert deltas == "one two three "
    assert got[-1]["payload"]["result"]["response"] == "3 words: one two three"  # type: ignore[index]


@pytest.mark.slow
def test_watch_a_trace_started_by_another_request(server: str) -> None:
    trace = new_trace_id()
    with (
        httpx.Client(base_url=server, timeout=30) as watcher,
        httpx.Client(base_url=server, timeout=30) as asker,
        watcher.stream("GET", f"/stream/{trace}") as r,
    ):
        stream = events(r.iter_lines())
        assert next(stream) == f"trace {trace}"  # the observer is open from here on
        reply = asker.post("/ask", json={"prompt": "watch me", "trace_id": trace})
        rest = list(stream)
    assert reply.status_code == 200 and reply.json()["trace_id"] == trace
    kinds = [e["type"] for e in rest if isinstance(e, dict)]
    assert kinds[-1] == "AGENT_OUTPUT" and kinds.count("THOUGHT_DELTA") == 2
