"""``DevSynapse``: the client of the ``cosmo://`` dev bus (§17), with reconnect.

One TCP connection carries every subscription of the synapse.  A reader task
matches each ``msg`` frame to its Subscription by ``sub_id``, decodes the
Signal (a bad frame is logged and dropped) and files it in the subscription's
bounded buffer.  Writes go through one lock, one line per ``send``.

When the connection drops, a supervisor task reconnects with exponential
backoff, re-sends every active ``sub`` and then calls the reconnect callbacks
(Dendrites re-REGISTER from there).  ``publish`` during an outage waits for the
connection up to ``publish_timeout`` seconds, then raises ``SynapseError``.

A token (our extension, see ``docs/buses.md``) is given as ``?token=...`` in the
URL or as the ``token=`` keyword.
"""

from __future__ import annotations

import logging
import random
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import orjson
from anyio.abc import SocketStream, TaskGroup

from ..codec import decode_signal, encode_signal
from ..errors import SignalDecodeError, SynapseClosedError, SynapseError
from ..signal import Signal
from .base import DEFAULT_SUBSCRIPTION_BUFFER, Subscription, Synapse
from .framing import LineReader, LineTooLong, encode_line

__all__ = ["DEFAULT_PORT", "DevLink", "DevSynapse", "open_dev_link", "parse_cosmo_url"]

log = logging.getLogger("cosmonapse.synapse.dev")

DEFAULT_PORT = 7070
#: Longest line the client reads; the server's own limit is what bounds publishes.
CLIENT_MAX_LINE = 64 * 1024 * 1024


def parse_cosmo_url(url: str) -> tuple[str, int, str | None]:
    """``cosmo://host[:port][?token=T]`` → (host, port, token); port defaults to 7070."""
    parts = urlsplit(url)
    if parts.scheme != "cosmo":
        raise ValueError(f"not a cosmo:// URL: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    tokens = parse_qs(parts.query).get("token")
    return (
        parts.hostname or "127.0.0.1",
        DEFAULT_PORT if port is None else port,
        (tokens[-1] if tokens else None),
    )


def _format_url(host: str, port: int) -> str:
    return f"cosmo://[{host}]:{port}" if ":" in host else f"cosmo://{host}:{port}"


class DevLink:
    """One raw connection to a dev bus, past the banner (and auth): send and receive messages.

    For management tools and tests; ``DevSynapse`` uses it for its own connection.
    """

    def __init__(self, stream: SocketStream, reader: LineReader) -> None:
        self.stream = stream
        self.reader = reader

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send(encode_line(message))

    async def receive(self) -> dict[str, Any]:
        """The next message; ``SynapseError`` if the server sent something that is not one."""
        line = await self.reader.receive_line()
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SynapseError(f"dev bus sent a line that is not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise SynapseError(f"dev bus sent a non-object message: {line[:200]!r}")
        return msg

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()

    async def __aenter__(self) -> DevLink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def open_dev_link(
    host: str,
    port: int,
    *,
    token: str | None = None,
    connect_timeout: float = 5.0,
    max_line: int = CLIENT_MAX_LINE,
) -> DevLink:
    """Connect, check the ``welcome`` banner, then authenticate (token) or ping (no token).

    Raises ``SynapseError`` (with the address in the message) on any failure.
    """
    where = _format_url(host, port)
    timeout = connect_timeout
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port)
    except TimeoutError:
        raise SynapseError(f"cannot reach dev bus {where}: no connection within {timeout:g}s") from None
    except OSError as exc:
        raise SynapseError(f"cannot reach dev bus {where}: {exc}") from exc
    link = DevLink(stream, LineReader(stream, max_line))
    try:
        with anyio.fail_after(timeout):
            banner = await link.receive()
            if banner.get("op") != "welcome":
                raise SynapseError(f"{where} is not a cosmo dev bus (first line: {banner!r})")
            # With a token, auth_ok confirms it; without one, a ping finds out at once
            # whether the server wants a token (it answers err and closes).
            await link.send({"op": "auth", "token": token} if token is not None else {"op": "ping"})
            answer = await link.receive()
            if answer.get("op") != ("auth_ok" if token is not None else "pong"):
                detail = answer.get("message") if answer.get("op") == "err" else answer
                what = "refused the token" if token is not None else "refused the connection"
                raise SynapseError(f"dev bus {where} {what}: {detail}")
    except TimeoutError:
        await link.aclose()
        raise SynapseError(f"dev bus {where} did not complete the handshake in {timeout:g}s") from None
    except (anyio.EndOfStream, anyio.BrokenResourceError, LineTooLong, OSError) as exc:
        await link.aclose()
        raise SynapseError(f"dev bus {where} closed the connection during the handshake ({exc!r})") from exc
    except BaseException:
        await link.aclose()
        raise
    return link


def _sub_line(sub: Subscription) -> bytes:
    return encode_line(
        {"op": "sub", "sub_id": sub.sub_id, "subject": sub.subject, "queue_group": sub.queue_group}
    )


class DevSynapse(Synapse):
    """A Synapse over a ``cosmo://host:port`` dev bus (ours or the reference's)."""

    def __init__(
        self,
        url: str = "cosmo://127.0.0.1:7070",
        *,
        token: str | None = None,
        publish_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        reconnect_delay: float = 0.05,
        reconnect_max_delay: float = 2.0,
        max_line: int = CLIENT_MAX_LINE,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
    ) -> None:
        super().__init__(subscription_buffer=subscription_buffer)
        host, port, url_token = parse_cosmo_url(url)
        if token is not None and url_token is not None and token != url_token:
            raise ValueError("two different tokens given (URL ?token= and token=)")
        if publish_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("publish_timeout and connect_timeout must be > 0")
        self.host = host
        self.port = port
        self.token = token if token is not None else url_token
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.max_line = max_line
        self.reconnects = 0
        self._subs: dict[str, Subscription] = {}
        self._link: DevLink | None = None
        self._up: anyio.Event | None = None  # set while a connection is usable
        self._wlock: anyio.Lock | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """``cosmo://host:port`` (without the token)."""
        return _format_url(self.host, self.port)

    @property
    def is_up(self) -> bool:
        """True while a connection to the bus is established."""
        return self._link is not None

    # -- life cycle ------------------------------------------------------------
    async def _open(self, tg: TaskGroup) -> None:
        self._closing = False
        self._up = anyio.Event()
        self._wlock = anyio.Lock()
        link = await self._open_link()
        await self._install(link)
        tg.start_soon(self._supervise, link, name=f"dev-synapse:{self.url}")
        log.info("connected to dev bus %s", self.url)

    async def _shutdown(self) -> None:
        self._closing = True
        link = self._link
        self._link = None
        if self._up is not None:
            self._up.set()  # wake publishers waiting for a connection: they see _closing
        if link is not None:
            await link.aclose()

    async def _open_link(self) -> DevLink:
        return await open_dev_link(
            self.host,
            self.port,
            token=self.token,
            connect_timeout=self.connect_timeout,
            max_line=self.max_line,
        )

    async def _install(self, link: DevLink) -> None:
        """Re-send every active subscription, then make *link* the live connection."""
        assert self._wlock is not None and self._up is not None
        async with self._wlock:
            if self._closing:
                await link.aclose()  # close() raced the reconnect: the reader ends at once
                return
            data = b"".join(_sub_line(sub) for sub in self._subs.values())
            if data:
                await link.stream.send(data)
            self._link = link
            self._up.set()

    def _mark_down(self, link: DevLink) -> None:
        if self._link is link:
            self._link = None
            if not self._closing:
                self._up = anyio.Event()

    async def _drop(self, link: DevLink) -> None:
        """Give up on *link*: the supervisor's reader wakes up and reconnects."""
        self._mark_down(link)
        await link.aclose()

    async def _supervise(self, link: DevLink) -> None:
        while True:
            reason = await self._read_until_lost(link)
            self._mark_down(link)
            await link.aclose()
            if self._closing:
                return
            if not self.reconnect:
                log.error("lost dev bus %s (%s); reconnect is off", self.url, reason)
                return
            log.warning("lost dev bus %s (%s); reconnecting", self.url, reason)
            link = await self._reconnect()
            self.reconnects += 1
            log.info("reconnected to dev bus %s; %d subscriptions restored", self.url, len(self._subs))
            self._notify_reconnected()

    async def _reconnect(self) -> DevLink:
        """Connect again with exponential backoff (jittered), forever until closed."""
        delay = self.reconnect_delay
        attempts = 0
        while True:
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.reconnect_max_delay)
            attempts += 1
            try:
                link = await self._open_link()
            except SynapseError as exc:
                level = logging.WARNING if attempts % 20 == 1 else logging.DEBUG
                log.log(level, "reconnect attempt %d to %s failed: %s", attempts, self.url, exc)
                continue
            try:
                await self._install(link)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                log.debug("connection to %s lost while restoring subscriptions: %s", self.url, exc)
                await link.aclose()
                continue
            return link

    async def _read_until_lost(self, link: DevLink) -> str:
        """Deliver ``msg`` frames until the connection ends; returns why it ended."""
        reader = link.reader
        while True:
            try:
                line = await reader.receive_line()
            except LineTooLong as exc:
                log.warning("dropped a message from %s: %s", self.url, exc)
                continue
            except anyio.EndOfStream:
                return "the server closed the connection"
            except anyio.ClosedResourceError:
                return "connection closed"
            except (anyio.BrokenResourceError, OSError) as exc:
                return f"connection broken: {exc!r}"
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                log.warning("dev bus %s sent a line that is not JSON (%s); dropped", self.url, exc)
                continue
            if not isinstance(msg, dict):
                log.warning("dev bus %s sent a non-object message; dropped", self.url)
                continue
            op = msg.get("op")
            if op == "msg":
                await self._on_msg(msg)
            elif op == "err":
                log.warning("dev bus %s reported: %s", self.url, msg.get("message"))

    async def _on_msg(self, msg: dict[str, Any]) -> None:
        sub_id = msg.get("sub_id")
        sub = self._subs.get(sub_id) if isinstance(sub_id, str) else None
        if sub is None:
            return  # unsubscribed while in flight
        frame = msg.get("frame")
        if not isinstance(frame, str):
            log.warning("dropped a msg on %s: frame is not a string", msg.get("subject"))
            return
        try:
            sig = decode_signal(frame)
        except SignalDecodeError as exc:
            log.warning("dropped a frame on %s: %s", msg.get("subject"), exc)
            return
        await sub.deliver(sig)

    # -- Synapse surface -----------------------------------------------------
    async def publish(self, subject: str, signal: Signal) -> None:
        """Send *signal*; waits up to ``publish_timeout`` for a connection, then ``SynapseError``."""
        if self._tg is None:
            raise SynapseClosedError("DevSynapse is not connected; call connect() first")
        frame = encode_signal(signal).decode()
        data = orjson.dumps(
            {"op": "pub", "subject": subject, "frame": frame}, option=orjson.OPT_APPEND_NEWLINE
        )
        await self._send(data, f"{signal.type.value} {signal.id} on {subject}")

    async def _send(self, data: bytes, what: str) -> None:
        assert self._wlock is not None
        deadline = anyio.current_time() + self.publish_timeout
        while True:
            if self._closing or self._tg is None:
                raise SynapseClosedError(f"DevSynapse {self.url} is closed; {what} not sent")
            link = self._link
            if link is None:
                assert self._up is not None
                with anyio.move_on_after(deadline - anyio.current_time()):
                    await self._up.wait()
                if self._link is None and not self._closing:
                    raise SynapseError(
                        f"dev bus {self.url} unreachable for {self.publish_timeout:g}s; {what} not sent"
                    )
                continue
            started = False
            try:
                with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                    async with self._wlock:
                        if self._link is not link:
                            continue
                        started = True
                        await link.stream.send(data)
                return
            except TimeoutError:
                if started:
                    # A half-written line would garble the stream: start over on a new connection.
                    await self._drop(link)
                raise SynapseError(
                    f"dev bus {self.url} did not take {what} within {self.publish_timeout:g}s"
                ) from None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await self._drop(link)  # then wait for the reconnect, within the deadline

    async def _control(self, data: bytes) -> None:
        """Send a ``sub``/``unsub`` if connected; otherwise the next reconnect restores the set."""
        assert self._wlock is not None
        async with self._wlock:
            link = self._link
            if link is None:
                return
            try:
                await link.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the reader sees the broken connection and the reconnect re-sends

    async def _on_subscribe(self, sub: Subscription) -> None:
        self._subs[sub.sub_id] = sub
        await self._control(_sub_line(sub))

    async def _on_unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.sub_id, None) is not None:
            await self._control(encode_line({"op": "unsub", "sub_id": sub.sub_id}))
