"""The ``mcp`` source against a real stdio MCP server subprocess (tests/mcp_test_server.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest

from cosmonapse.neuron import (
    Neuron,
    NeuronConfigError,
    NeuronConnectionError,
    NeuronInputError,
    NeuronTimeout,
)
from cosmonapse.neuron.intents import apply_intents

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """Where the server's stderr goes (keeps test output clean)."""
    with open(tmp_path / "mcp-server.log", "w") as f:
        yield f


def mcp_neuron(errlog: TextIO, **kw: Any) -> Any:
    return Neuron("mcp", command=sys.executable, args=[SERVER], errlog=errlog, startup_timeout=20, **kw)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_shared_session_is_reused_concurrent_and_gone_after_aclose(errlog: TextIO) -> None:
    neuron = mcp_neuron(errlog)
    async with neuron:
        with anyio.fail_after(30):
            first = await neuron({"tool": "pid"}, [])
            added = await neuron({"tool": "add", "arguments": {"a": 2, "b": 3}}, [])
            second = await neuron({"tool": "pid", "args": {}}, [])
            met: list[str] = []

            async def meet(name: str) -> None:
                met.append((await neuron({"tool": "meet", "name": name}, []))["response"])

            # `meet` only returns once both calls are in flight at once: serial calls would hang.
            async with anyio.create_task_group() as tg:
                tg.start_soon(meet, "a")
                tg.start_soon(meet, "b")
        pid = int(first["response"])
        assert second["response"] == first["response"], "one session (one server process) for every call"
        assert _alive(pid)
        assert sorted(met) == ["a met", "b met"]
        assert added["response"] == "5"
        assert added["result"] == {"result": 5}
        assert added["is_error"] is False
        assert added["content"] == [{"type": "text", "text": "5"}]
        assert added["meta"]["tool"] == "add" and added["meta"]["command"][-1] == SERVER
    assert not _alive(pid), "aclose() returns only once the server process is gone"


async def test_catalogue_tool_errors_and_default_tool(errlog: TextIO) -> None:
    neuron = mcp_neuron(errlog, tool="echo")
    async with neuron:
        with anyio.fail_after(30):
            catalogue = await neuron({"__list_tools__": True}, [])
            echoed = await neuron({"text": "hi there"}, [])  # the other input keys are the arguments
            failed = await neuron({"tool": "fail", "arguments": {"reason": "nope"}}, [])
    names = {t["name"] for t in catalogue["tools"]}
    assert {"add", "echo", "pid", "fail", "meet", "hang"} <= names
    add = next(t for t in catalogue["tools"] if t["name"] == "add")
    assert add["description"] == "Add two integers." and add["input_schema"]["required"] == ["a", "b"]
    assert echoed["response"] == "hi there"
    assert failed["is_error"] is True and "nope" in failed["response"]
    marker = apply_intents(failed)
    assert marker["__error__"] is True and marker["code"] == "MCP_TOOL_ERROR"


async def test_per_request_timeout_then_the_session_still_serves(errlog: TextIO) -> None:
    neuron = mcp_neuron(errlog, timeout=0.5)
    async with neuron:
        with anyio.fail_after(30):
            with pytest.raises(NeuronTimeout, match=r"did not answer tools/call 'hang' within timeout=0.5 s"):
                await neuron({"tool": "hang"}, [])
            out = await neuron({"tool": "echo", "text": "still here"}, [])
    assert out["response"] == "still here"


async def test_a_crashed_server_fails_the_call_and_the_next_call_gets_a_fresh_one(errlog: TextIO) -> None:
    neuron = mcp_neuron(errlog)
    async with neuron:
        with anyio.fail_after(30):
            before = int((await neuron({"tool": "pid"}, []))["response"])
            with pytest.raises(
                NeuronConnectionError, match="closed the connection during tools/call 'crash'"
            ):
                await neuron({"tool": "crash"}, [])
            after = int((await neuron({"tool": "pid"}, []))["response"])
    assert after != before
    assert not _alive(before) and not _alive(after)


async def test_without_a_host_each_call_uses_a_short_lived_session(errlog: TextIO) -> None:
    neuron = mcp_neuron(errlog)
    with anyio.fail_after(30):
        out = await neuron({"tool": "pid"}, [])
        with pytest.raises(NeuronInputError, match=r"say which with input\.tool"):
            await neuron({"x": 1}, [])
    assert not _alive(int(out["response"])), "the per-call session's server is stopped when the call returns"
    await neuron.aclose()


async def test_a_host_task_group_can_run_the_session(errlog: TextIO) -> None:
    neuron = mcp_neuron(errlog)
    async with anyio.create_task_group() as tg:
        await tg.start(neuron.serve)
        with anyio.fail_after(30):
            pid = int((await neuron({"tool": "pid"}, []))["response"])
            assert int((await neuron({"tool": "pid"}, []))["response"]) == pid
        tg.cancel_scope.cancel()  # the host stopping ends the session
    assert not _alive(pid)
    await neuron.aclose()


async def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    neuron = Neuron("mcp", command=str(tmp_path / "no-such-server"), startup_timeout=5)
    async with neuron:
        with anyio.fail_after(20), pytest.raises(NeuronConnectionError, match="could not start mcp server"):
            await neuron({"tool": "x"}, [])


def test_mcp_config_errors() -> None:
    with pytest.raises(NeuronConfigError, match="needs command="):
        Neuron("mcp")
    with pytest.raises(NeuronConfigError, match="unknown mcp server preset"):
        Neuron("mcp", server="nope")
    assert Neuron("mcp", server="time", args=["--local-timezone", "UTC"]).command == [
        "uvx",
        "mcp-server-time",
        "--local-timezone",
        "UTC",
    ]
