"""The README demo with an LLM configured: a local OpenAI-compatible server, streamed tokens."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from llm_servers import FakeLLM, serve

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.anyio


async def test_demo_uses_the_llm_from_the_environment() -> None:
    async with serve(FakeLLM(text="Hello Cosmonapse from a local model")) as server:
        env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
        env["COSMONAPSE_LLM_BASE_URL"] = server.url
        env["COSMONAPSE_LLM_MODEL"] = "tiny-test-model"
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "cosmonapse.demo", "say hi"], cwd=ROOT, env=env, check=False
            )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "worker Neuron: llm" in out
    assert "[FINAL] Hello Cosmonapse from a local model" in out
    chat = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert chat and chat[0].json()["model"] == "tiny-test-model" and chat[0].json()["stream"] is True
