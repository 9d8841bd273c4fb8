"""Test helpers for the dev bus: a raw line client that speaks bytes, not Signals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
from anyio.abc import Process, SocketStream, TaskGroup, TaskStatus

from cosmonapse.synapse.dev_server import DevSynapseServer
from cosmonapse.synapse.framing import LineReader, encode_line


class RawClient:
    """A bare TCP connection to a dev bus; every receive is bounded by a deadline."""

    def __init__(self, stream: SocketStream, max_line: int = 64 * 1024 * 1024) -> None:
        self.stream = stream
        self.reader = LineReader(stream, max_line)

    @classmethod
    async def connect(cls, port: int, *, welcome: bool = True) -> RawClient:
        client = cls(await anyio.connect_tcp("127.0.0.1", port))
        if welcome:
            assert await client.recv() == {"op": "welcome"}
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send(encode_line(message))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def recv_raw(self, deadline: float = 10.0) -> bytes:
        with anyio.fail_after(deadline):
            return await self.reader.receive_line()

    async def recv(self, deadline: float = 10.0) -> dict[str, Any]:
        return orjson.loads(await self.recv_raw(deadline))

    async def sync(self) -> None:
        """Round trip a ping: every line sent before it has been handled by the server."""
        await self.send({"op": "ping"})
        assert await self.recv() == {"op": "pong"}

    async def sub(self, sub_id: str, subject: str, group: str | None = None) -> None:
        await self.send({"op": "sub", "sub_id": sub_id, "subject": subject, "queue_group": group})

    async def pub(self, subject: str, frame: Any) -> None:
        await self.send({"op": "pub", "subject": subject, "frame": frame})

    async def at_eof(self, deadline: float = 10.0) -> list[bytes]:
        """Read until the server closes; returns the lines received before the end."""
        lines = []
        with anyio.fail_after(deadline):
            while True:
                try:
                    lines.append(await self.reader.receive_line())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return lines

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ServerInTask:
    """A dev bus run in its own task, so it can stop and restart while clients stay open."""

    def __init__(self, tg: TaskGroup, **kwargs: Any) -> None:
        self._tg = tg
        self._kwargs = kwargs
        self.server: DevSynapseServer | None = None
        self._scope: anyio.CancelScope | None = None
        self._done: anyio.Event | None = None

    async def start(self, **overrides: Any) -> DevSynapseServer:
        scope, done = anyio.CancelScope(), anyio.Event()
        server = DevSynapseServer(**{**self._kwargs, **overrides})

        async def run(*, task_status: TaskStatus[DevSynapseServer]) -> None:
            try:
                with scope:
                    await server.serve(task_status=task_status)
            finally:
                done.set()

        await self._tg.start(run)
        self.server, self._scope, self._done = server, scope, done
        return server

    async def stop(self) -> None:
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            await self._done.wait()


COSMO = [sys.executable, "-m", "cosmonapse"]
URL_LINE = re.compile(r"cosmo synapse listening on (cosmo://\S+) \(namespace (\S+)\)")


@asynccontextmanager
async def cosmo_start(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Process, str, LineReader]]:
    """Start ``cosmo synapse start memory --port 0 ...``; yields (process, url, stdout lines)."""
    cmd = [*COSMO, "synapse", "start", "memory", "--port", "0", *args]
    async with await anyio.open_process(
        cmd, env={**os.environ, **(env or {})}, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None
        out = LineReader(proc.stdout)
        try:
            with anyio.fail_after(30):
                while True:
                    line = (await out.receive_line()).decode()
                    match = URL_LINE.search(line)
                    if match:
                        break
            yield proc, match.group(1), out
        finally:
            if proc.returncode is None:
                proc.kill()


async def rest_of(out: LineReader) -> str:
    lines = []
    with anyio.fail_after(30):
        while True:
            try:
                lines.append((await out.receive_line()).decode())
            except anyio.EndOfStream:
                return "\n".join(lines)


PEER = Path(__file__).with_name("dev_peer.py")


@asynccontextmanager
async def peer_process(*args: str) -> AsyncIterator[tuple[Process, LineReader]]:
    """Run ``tests/dev_peer.py ARGS``; yields (process, stdout lines); killed if still running."""
    cmd = [sys.executable, str(PEER), *args]
    async with await anyio.open_process(cmd, stderr=None) as proc:
        assert proc.stdout is not None
        try:
            yield proc, LineReader(proc.stdout)
        finally:
            if proc.returncode is None:
                proc.kill()


async def expect_line(out: LineReader, prefix: str, deadline: float = 30.0) -> str:
    """Skip stdout lines until one starts with *prefix*; returns it."""
    with anyio.fail_after(deadline):
        while True:
            line = (await out.receive_line()).decode()
            if line.startswith(prefix):
                return line
