"""An MCP Neuron on a Dendrite: the Dendrite hosts its session; one server process serves every TASK."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest

from cosmonapse import Axon, SignalType
from cosmonapse.neuron import Neuron
from cosmonapse.testing.harness import memory_cluster

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    with open(tmp_path / "mcp.log", "w") as f:
        yield f


async def test_dendrite_serves_the_mcp_session_for_its_lifetime(errlog: TextIO) -> None:
    neuron: Any = Neuron("mcp", command=sys.executable, args=[SERVER], errlog=errlog, startup_timeout=20)
    async with memory_cluster(axons=[Axon(neuron_id="tools", neuron_fn=neuron)]) as c:
        assert neuron._serving  # started by the Dendrite, no `async with neuron:` needed
        with anyio.fail_after(30):
            pids = set()
            for _ in range(3):
                reply = await c.orchestrator.dispatch_and_wait(neuron="tools", input={"tool": "pid"})
                assert reply.type is SignalType.AGENT_OUTPUT
                pids.add(reply.payload["output"]["response"])
    assert len(pids) == 1  # one shared session
    assert not neuron._serving  # ended with the Dendrite
