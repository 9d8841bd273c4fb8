"""Helpers for the Prism tests: a minimal WebSocket client (wsproto over a real socket)
and Prism run in-process next to a real dev bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
from anyio.abc import SocketStream
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from cosmonapse.prism.server import PrismServer

__all__ = ["Prism", "WsClient", "prism_running"]


class WsClient:
    """One WebSocket handshake and the messages after it; every wait is bounded."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.status: int | None = None
        self.closed: int | None = None
        self._events: list[Any] = []
        self._text: list[str] = []

    @classmethod
    @asynccontextmanager
    async def open(
        cls, port: int, target: str, *, host: str | None = None, origin: str | None = None
    ) -> AsyncIterator[WsClient]:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        client = cls(stream)
        try:
            headers = [(b"origin", origin.encode())] if origin is not None else []
            await stream.send(client.ws.send(Request(host=host or f"127.0.0.1:{port}", target=target,
                                                     extra_headers=headers)))  # fmt: skip
            await client._handshake()
            yield client
        finally:
            await stream.aclose()

    async def _pump(self) -> None:
        data = await self.stream.receive(65536)
        self.ws.receive_data(data)
        for event in self.ws.events():
            self._events.append(event)

    async def _handshake(self, deadline: float = 10) -> None:
        with anyio.fail_after(deadline):
            while self.status is None:
                try:
                    await self._pump()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    self.status = 0
                    return
                for event in self._events:
                    if isinstance(event, AcceptConnection):
                        self.status = 101
                    elif isinstance(event, RejectConnection):
                        self.status = event.status_code
                self._events = [
                    e
                    for e in self._events
                    if not isinstance(e, AcceptConnection | RejectConnection | RejectData)
                ]

    async def receive_json(self, deadline: float = 10) -> dict[str, Any]:
        """The next complete text message, parsed."""
        with anyio.fail_after(deadline):
            while True:
                while self._events:
                    event = self._events.pop(0)
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            text, self._text = "".join(self._text), []
                            return orjson.loads(text)
                    elif isinstance(event, CloseConnection):
                        self.closed = event.code
                        raise anyio.EndOfStream(f"closed with {event.code} {event.reason}")
                    elif isinstance(event, Message):
                        continue
                await self._pump()

    async def signals(self, count: int, deadline: float = 10) -> list[dict[str, Any]]:
        """Signals from batch messages until *count* have arrived."""
        got: list[dict[str, Any]] = []
        with anyio.fail_after(deadline):
            while len(got) < count:
                msg = await self.receive_json(deadline)
                if msg.get("kind") == "batch":
                    got.extend(msg["signals"])
        return got

    async def send_text(self, text: str) -> None:
        await self.stream.send(self.ws.send(TextMessage(data=text)))


class Prism:
    """A PrismServer running in a task: its URL, port and token."""

    def __init__(self, server: PrismServer, url: str) -> None:
        self.server = server
        self.url = url
        self.port = int(url.split(":")[2].split("/")[0])
        self.token = url.rsplit("token=", 1)[1]

    def ws_target(self, token: str | None = "") -> str:
        token = self.token if token == "" else token
        return "/ws" if token is None else f"/ws?token={token}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def prism_running(bus_url: str, namespace: str, **kw: Any) -> AsyncIterator[Prism]:
    """Prism for *namespace* on *bus_url* on a free port, stopped (and its bus client closed) on exit."""
    server = PrismServer(bus_url, namespace, port=0, **kw)
    stop = anyio.Event()
    ready: list[str] = []
    started = anyio.Event()

    def on_ready(url: str) -> None:
        ready.append(url)
        started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, stop.wait, on_ready)
        with anyio.fail_after(15):
            await started.wait()
        try:
            yield Prism(server, ready[0])
        finally:
            stop.set()
