"""``cosmo prism`` / ``cosmo doppler --prism`` as real processes on cosmo:// and nats://."""

from __future__ import annotations

import json
import socket

import anyio
import httpx
import pytest
from cli_util import bus, cosmo, cosmo_child, peer
from prism_util import WsClient

pytestmark = pytest.mark.slow
URL_LINE = r"cosmo prism: (\S+) on (\S+) at (http://127\.0\.0\.1:(\d+)/\?token=(\S+))"


async def first_signals(port: int, token: str, count: int) -> tuple[dict, list[dict]]:
    async with WsClient.open(port, f"/ws?token={token}", origin=f"http://127.0.0.1:{port}") as ws:
        return await ws.receive_json(), await ws.signals(count, deadline=30)


@pytest.mark.parametrize("kind", ["cosmo", "nats"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serves_the_namespace_sends_one_discover_and_stops_on_sigterm(kind: str, backend: str) -> None:
    ns = f"prism{kind}"
    with bus(kind, ns) as url, peer(url, ns):
        discovers = ("doppler", "--url", url, "-n", ns, "-t", "DISCOVER", "--json")
        with cosmo_child(*discovers, ready="tailing") as tail:
            args = ("prism", "--url", url, "-n", ns, "--no-browser", "--port", "0", "--backend", backend)
            with cosmo_child(*args, ready=URL_LINE) as prism:
                assert prism.match is not None
                assert prism.match.group(1) == ns and prism.match.group(2) == url
                page, port, token = prism.match.group(3), int(prism.match.group(4)), prism.match.group(5)
                assert httpx.get(page, timeout=10).status_code == 200
                # the DISCOVER made the peer's neurons REGISTER: the page sees them in its first batches
                hello, signals = anyio.run(first_signals, port, token, 4)
                assert hello["namespace"] == ns and hello["bus"] == url
                assert signals[0]["type"] == "DISCOVER"
                registered = {s["directed"]["id"] for s in signals[1:] if s["type"] == "REGISTER"}
                assert registered == {"writer", "asker", "guard"}
                assert prism.stop() == 0, prism.output
            assert "cosmo prism: stopped" in prism.output
            tail.stop()
        assert [json.loads(x)["type"] for x in tail.output.splitlines() if x.startswith("{")] == ["DISCOVER"]


def test_doppler_prism_is_the_same_command() -> None:
    with bus("cosmo", "api-demo") as url:
        args = ("doppler", "--prism", f"--url={url}", "-n", "api-demo", "--no-browser", "--port", "0")
        with cosmo_child(*args, ready=URL_LINE) as prism:
            assert prism.match is not None and prism.match.group(1) == "api-demo"
            assert httpx.get(prism.match.group(3), timeout=10).status_code == 200
            assert prism.stop() == 0


def test_other_addresses_need_expose_and_warn() -> None:
    refused = cosmo("prism", "--host", "0.0.0.0", "--no-browser")
    assert refused.returncode == 2 and "Add --expose" in refused.stderr
    with bus("cosmo", "exposed") as url:
        args = ("prism", "--url", url, "-n", "exposed", "--host", "0.0.0.0", "--expose", "--no-browser",
                "--port", "0")  # fmt: skip
        with cosmo_child(*args, ready=URL_LINE) as prism:
            assert prism.match is not None
            assert "WARNING: serving on 0.0.0.0, not loopback" in prism.output
            assert httpx.get(prism.match.group(3), timeout=10).status_code == 200
            assert prism.stop() == 0


def test_busy_port_and_unreachable_bus_fail_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with bus("cosmo", "busy") as url:
            busy = cosmo("prism", "--url", url, "-n", "busy", "--no-browser", "--port", str(port))
    assert busy.returncode == 1 and "Address already in use" in busy.stderr
    down = cosmo("prism", "--url", "cosmo://127.0.0.1:9", "--no-browser", "--port", "0")
    assert down.returncode == 1 and "127.0.0.1:9" in down.stderr and "Traceback" not in down.stderr
