"""``cosmo synapse ...`` run as real processes, and the CLI's error paths."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys

import anyio
import pytest
from click.testing import CliRunner
from devbus_util import COSMO, RawClient, cosmo_start, rest_of

from cosmonapse import DevSynapse, Signal, SignalType
from cosmonapse.cli import cli
from cosmonapse.errors import SynapseError
from cosmonapse.synapse.dev_server import DevSynapseServer


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_start_serves_registers_the_namespace_and_exits_0_on_sigterm(backend: str) -> None:
    async with cosmo_start("--namespace", "clitest", "--backend", backend) as (proc, url, out):
        port = int(url.rsplit(":", 1)[1])
        async with await RawClient.connect(port) as tool:
            await tool.send({"op": "mgmt_list"})
            listing = await tool.recv()
            assert [row["namespace"] for row in listing["namespaces"]] == ["clitest"]

        got = anyio.Event()

        async def handler(sig: Signal) -> None:
            got.set()

        async with DevSynapse(url) as syn:
            await syn.subscribe("cosmonapse.clitest.TASK", handler)
            await syn.publish("cosmonapse.clitest.TASK", Signal(type=SignalType.TASK, trace_id="trc_cli"))
            with anyio.fail_after(10):
                await got.wait()

        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        assert "cosmo synapse stopped (namespace clitest, 1 signals)" in await rest_of(out)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_synapse_stop_shuts_the_bus_down_and_view_lists() -> None:
    async with cosmo_start("-n", "demo", env={"COSMO_SYNAPSE_TOKEN": "tok"}) as (proc, url, out):
        with pytest.raises(SynapseError, match="auth required"):
            await DevSynapse(url).connect()
        view = await anyio.run_process([*COSMO, "synapse", "view", "--url", f"{url}?token=tok"], check=False)
        assert view.returncode == 0, view.stderr
        assert view.stdout.decode().split()[:2] == ["demo", "memory"]
        stop = await anyio.run_process(
            [*COSMO, "synapse", "stop", "--url", url, "-n", "demo", "--token", "tok"], check=False
        )
        assert stop.returncode == 0, stop.stderr
        assert b"stopped namespace demo" in stop.stdout
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        assert "namespace demo stopped by a management request" in await rest_of(out)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_start_on_a_busy_port_fails_clearly() -> None:
    async with DevSynapseServer() as srv:
        result = await anyio.run_process(
            [*COSMO, "synapse", "start", "memory", "--port", str(srv.port)], check=False
        )
    assert result.returncode == 1
    assert b"cannot listen on 127.0.0.1" in result.stderr


def test_view_and_stop_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["synapse", "view", "--url", "http://x"])
    assert result.exit_code == 2
    assert "not a cosmo:// URL" in result.output
    port = unused_port()
    result = runner.invoke(cli, ["synapse", "stop", "--url", f"cosmo://127.0.0.1:{port}", "-n", "x"])
    assert result.exit_code == 1
    assert f"cannot reach dev bus cosmo://127.0.0.1:{port}" in result.output


def test_view_and_stop_against_a_live_bus() -> None:
    runner = CliRunner()

    async def scenario() -> list[str]:
        outputs = []
        async with DevSynapseServer() as srv, await RawClient.connect(srv.port) as owner:
            await owner.send({"op": "ns_register", "namespace": "n1"})
            await owner.recv()
            for args in (
                ["synapse", "view", "--url", srv.url],
                ["synapse", "view", "--url", srv.url, "-n", "n1"],
                ["synapse", "view", "--url", srv.url, "-n", "n1", "--json"],
                ["synapse", "stop", "--url", srv.url, "-n", "nope"],
                ["synapse", "stop", "--url", srv.url, "-n", "n1", "--timeout", "0.5"],
                ["synapse", "view", "--url", srv.url],
            ):
                result = await anyio.to_thread.run_sync(runner.invoke, cli, args)
                outputs.append(f"{result.exit_code}|{result.output}")
            assert await owner.recv() == {"op": "ns_stopping", "namespace": "n1"}
        return outputs

    listing, info, as_json, unknown, stopped, empty = anyio.run(scenario)
    assert listing.startswith("0|n1 ") and "memory" in listing
    assert "client_count" in info and "transport     memory" in info
    assert '"op":"mgmt_ns_info"' in as_json
    assert unknown.startswith("1|") and "namespace 'nope' not found" in unknown
    # The namespace is gone, but its owner (a raw client) keeps the bus up: stop says so and fails.
    assert stopped.startswith("1|") and "namespace n1 was removed" in stopped
    assert "the bus is still running" in stopped
    assert empty == "0|no namespaces registered\n"


def test_version_and_help() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["--version"]).output.startswith("cosmo, version ")
    result = runner.invoke(cli, ["synapse", "start", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--namespace", "--token", "--max-line"):
        assert option in result.output


def unused_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_entry_points() -> None:
    """`cosmo`, `python -m cosmonapse` and `python -m cosmonapse.cli` are the same command."""
    commands = [[sys.executable, "-m", "cosmonapse"], [sys.executable, "-m", "cosmonapse.cli"]]
    if shutil.which("cosmo"):
        commands.append(["cosmo"])
    for command in commands:
        result = subprocess.run([*command, "synapse", "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        for verb in ("start", "stop", "view"):
            assert verb in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_foreign_client_cannot_hijack_the_namespace_and_stop_tells_the_truth() -> None:
    async with cosmo_start("-n", "owned") as (proc, url, out):
        port = int(url.rsplit(":", 1)[1])
        async with await RawClient.connect(port) as intruder:
            await intruder.send({"op": "ns_register", "namespace": "owned"})
            answer = await intruder.recv()
            assert answer["op"] == "err" and "registered by another connection" in answer["message"]
            stop = await anyio.run_process(
                [*COSMO, "synapse", "stop", "--url", url, "-n", "owned"], check=False
            )
        assert stop.returncode == 0, stop.stderr
        assert b"stopped namespace owned" in stop.stdout and b"the bus has shut down" in stop.stdout
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        assert "namespace owned stopped by a management request" in await rest_of(out)
