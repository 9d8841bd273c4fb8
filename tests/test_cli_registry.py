"""``cosmo registry list``: DISCOVER, collect REGISTERs, print the roster (real buses)."""

from __future__ import annotations

import json

import pytest
from cli_util import cosmo, world_fixture  # noqa: F401  (the `world` fixture)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_lists_the_running_neurons(world: tuple[str, str], backend: str) -> None:
    url, ns = world
    done = cosmo("registry", "list", "--url", url, "-n", ns, "--backend", backend)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["NEURON", "ROLE", "VERSION", "CAPABILITIES"]
    assert [r.split()[0] for r in rows[1:]] == ["asker", "guard", "writer"]
    assert "text, write" in rows[3] or "write, text" in rows[3]


def test_json_and_capability_filter(world: tuple[str, str]) -> None:
    url, ns = world
    done = cosmo("registry", "list", "--url", url, "-n", ns, "--capability", "ask", "--json", "--wait", "0.5")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["neuron_id"] for r in rows] == ["asker"]
    assert rows[0]["role"] == "neuron" and rows[0]["capabilities"] == ["ask"]


def test_an_empty_namespace_says_so(world: tuple[str, str]) -> None:
    url, _ = world
    done = cosmo("registry", "list", "--url", url, "-n", "nobody-here", "--wait", "0.2")
    assert done.returncode == 0
    assert done.stdout.startswith("no participants answered on nobody-here")
    empty = cosmo("registry", "list", "--url", url, "-n", "nobody-here", "--wait", "0.2", "--json")
    assert json.loads(empty.stdout) == []
