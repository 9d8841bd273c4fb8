"""Raw frame taps on a live bus: see every frame of a namespace as sent, publish frames as given.

The conformance check must judge what a peer actually put on the wire, so it
does not go through an adapter that decodes (and drops what it cannot):

* ``cosmo://`` — the dev bus line protocol (§17), over :func:`~..synapse.dev.open_dev_link`;
* ``nats://`` — the NATS core text protocol (§18), over a plain TCP connection;
* any :class:`~..synapse.base.Synapse` (the in-process buses) — its Signals re-encoded.

A tap yields ``(subject, frame text)`` pairs, its own publishes included (buses
echo them), and bounds every wait.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..codec import encode_signal
from ..errors import SynapseError
from ..signal import Signal
from ..synapse.base import Synapse
from ..synapse.dev import open_dev_link, parse_cosmo_url
from ..synapse.nats_protocol import (
    PING,
    PONG,
    Err,
    Info,
    Msg,
    Parser,
    encode_connect,
    encode_pub_head,
    encode_sub,
)

__all__ = ["FrameTap", "open_tap"]

#: Frames buffered between the reader and the checker; a reader that finds it full waits.
TAP_BUFFER = 4096


class FrameTap(abc.ABC):
    """Frames of one namespace in, frames out."""

    def __init__(self) -> None:
        self._send: MemoryObjectSendStream[tuple[str, str]]
        self.received: MemoryObjectReceiveStream[tuple[str, str]]
        self._send, self.received = anyio.create_memory_object_stream[tuple[str, str]](TAP_BUFFER)

    @abc.abstractmethod
    async def publish(self, subject: str, frame: str) -> None: ...

    async def publish_signal(self, subject: str, signal: Signal) -> str:
        frame = encode_signal(signal).decode()
        await self.publish(subject, frame)
        return frame


class _DevTap(FrameTap):
    def __init__(self, link: Any) -> None:
        super().__init__()
        self.link = link

    async def publish(self, subject: str, frame: str) -> None:
        await self.link.send({"op": "pub", "subject": subject, "frame": frame})

    async def read(self) -> None:
        async with self._send:
            while True:
                try:
                    msg = await self.link.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if msg.get("op") == "msg":
                    frame = msg.get("frame")
                    text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
                    await self._send.send((str(msg.get("subject")), text))


class _NatsTap(FrameTap):
    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream
        self.parser = Parser()
        self._pending: list[Any] = []

    async def publish(self, subject: str, frame: str) -> None:
        data = frame.encode()
        await self.stream.send(encode_pub_head(subject.encode()) + b"%d\r\n" % len(data) + data + b"\r\n")

    async def handshake(self, pattern: str, timeout_s: float) -> None:
        with anyio.fail_after(timeout_s):
            info = await self._next_event()
            if not isinstance(info, Info):
                raise SynapseError(f"not a NATS server (first line: {info!r})")
            options = {"verbose": False, "pedantic": False, "name": "cosmo-conformance", "lang": "python"}
            await self.stream.send(encode_connect(options) + encode_sub(pattern.encode(), 1) + b"PING\r\n")
            while True:
                event = await self._next_event()
                if isinstance(event, Err):
                    raise SynapseError(f"NATS refused the conformance client: {event.message}")
                if event == PONG:
                    return

    async def _next_event(self) -> Any:
        while True:
            if self._pending:
                return self._pending.pop(0)
            data = await self.stream.receive()
            self._pending.extend(self.parser.feed(data))

    async def read(self) -> None:
        async with self._send:
            while True:
                try:
                    event = await self._next_event()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if isinstance(event, Msg):
                    await self._send.send((event.subject, event.payload.decode("utf-8", "replace")))
                elif event is PING:
                    await self.stream.send(b"PONG\r\n")


class _SynapseTap(FrameTap):
    def __init__(self, synapse: Synapse) -> None:
        super().__init__()
        self.synapse = synapse

    async def publish(self, subject: str, frame: str) -> None:
        from ..codec import decode_signal

        await self.synapse.publish(subject, decode_signal(frame))

    async def on_signal(self, signal: Signal) -> None:
        await self._send.send(("", encode_signal(signal).decode()))


@asynccontextmanager
async def open_tap(url: str | Synapse, namespace: str, *, timeout_s: float = 5.0) -> AsyncIterator[FrameTap]:
    """A tap on ``cosmonapse.<namespace>.>`` of the bus at *url* (or on a connected Synapse)."""
    pattern = f"cosmonapse.{namespace}.>"
    if isinstance(url, Synapse):
        tap = _SynapseTap(url)
        sub = await url.subscribe(pattern, tap.on_signal)
        try:
            yield tap
        finally:
            await url.unsubscribe(sub)
            tap._send.close()
        return
    scheme = urlsplit(url).scheme.lower()
    async with anyio.create_task_group() as tg:
        if scheme == "cosmo":
            host, port, token = parse_cosmo_url(url)
            link = await open_dev_link(host, port, token=token, connect_timeout=timeout_s)
            async with link:
                dev = _DevTap(link)
                await link.send(
                    {"op": "sub", "sub_id": "conformance", "subject": pattern, "queue_group": None}
                )
                await link.send({"op": "ping"})
                with anyio.fail_after(timeout_s):
                    while (await link.receive()).get("op") != "pong":
                        pass
                tg.start_soon(dev.read)
                try:
                    yield dev
                finally:
                    tg.cancel_scope.cancel()
        elif scheme == "nats":
            parts = urlsplit(url.split(",")[0])
            try:
                with anyio.fail_after(timeout_s):
                    stream = await anyio.connect_tcp(parts.hostname or "127.0.0.1", parts.port or 4222)
            except (OSError, TimeoutError) as exc:
                raise SynapseError(f"cannot reach NATS at {url}: {exc!r}") from exc
            async with stream:
                nats = _NatsTap(stream)
                await nats.handshake(pattern, timeout_s)
                tg.start_soon(nats.read)
                try:
                    yield nats
                finally:
                    tg.cancel_scope.cancel()
        else:
            raise ValueError(f"conformance needs a cosmo:// or nats:// URL (or a Synapse), not {url!r}")
