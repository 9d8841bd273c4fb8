"""Helpers for the CLI and Prism tests: real buses, the test peer, and ``cosmo`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from nats_util import NatsServer

from cosmonapse_sync.testing import ChildProcess, dev_bus

__all__ = ["COSMO", "PEER", "bus", "cosmo", "cosmo_child", "peer", "world_fixture"]

COSMO = [sys.executable, "-m", "cosmonapse"]
PEER = Path(__file__).with_name("cli_peer.py")


@contextmanager
def bus(kind: str, namespace: str) -> Iterator[str]:
    """A real bus: ``cosmo synapse start`` in a child process, or a real nats-server."""
    if kind == "cosmo":
        with dev_bus(namespace) as url:
            yield url
    else:
        with NatsServer() as server:
            yield server.url


@contextmanager
def peer(url: str, namespace: str, backend: str = "asyncio") -> Iterator[ChildProcess]:
    """tests/cli_peer.py on *url*, ready once its Axons are REGISTERed."""
    with ChildProcess([sys.executable, str(PEER), url, namespace, backend], ready="ready") as child:
        yield child


def cosmo(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``cosmo ARGS`` to the end; the completed process (text)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*COSMO, *args], input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def cosmo_child(*args: str, ready: str | None = None) -> ChildProcess:
    """``cosmo ARGS`` as a long-running child (stdout and stderr merged), ready on a line."""
    return ChildProcess([*COSMO, *args], ready=ready)


@pytest.fixture(name="world", scope="module", params=["cosmo", "nats"])
def world_fixture(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(bus URL, namespace) with the test peer running: once per module, on each bus kind."""
    namespace = f"cli{os.getpid()}"
    with bus(request.param, namespace) as url, peer(url, namespace) as child:
        yield url, namespace
        assert child.stop() == 0, child.output
