"""``DevSynapse``: the client of the ``cosmo://`` dev bus (§17), with reconnect.

One TCP connection carries every subscription of the synapse.  A reader task
matches each ``msg`` frame to its Subscription by ``sub_id``, decodes the
Signal (a bad frame is logged and dropped) and files it in the subscription's
buffer without ever waiting: a subscription over its pending limits drops and
counts (slow consumer), so no subscription — STOP's included — ever waits
behind another one's backlog.  Every line sent (pub, sub, unsub) goes through one bounded
outbox drained by a writer task, which coalesces what is queued into one write;
``publish`` itself never waits while the connection is up and the outbox has room.
``subscribe`` sends the ``sub`` followed by a ``ping`` and returns once the pong
is back: from then on, whatever anyone publishes reaches the subscription.

When the connection drops, a supervisor task reconnects with exponential
backoff, re-sends every active ``sub`` and then calls the reconnect callbacks
(Dendrites re-REGISTER from there).  ``publish`` during an outage (or with the
outbox full) waits up to ``publish_timeout`` seconds, then raises
``SynapseError``.  Delivery is at most once: lines the writer was sending when
the connection broke are lost.

A token (our extension, see ``docs/buses.md``) is given as ``?token=...`` in the
URL or as the ``token=`` keyword.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import orjson
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..codec import decode_signal, encode_signal
from ..errors import SignalDecodeError, SynapseClosedError, SynapseError
from ..signal import Signal
from ..telemetry import bus_event
from .aiostream import READ_CHUNK, connect_tcp, inline_reading
from .base import (
    DEFAULT_PENDING_BYTES,
    DEFAULT_PENDING_LIMIT,
    DEFAULT_SUBSCRIPTION_BUFFER,
    LogThrottle,
    Subscription,
    Synapse,
)
from .framing import LineReader, LineTooLong, encode_line, receive_batch
from .sendnow import DirectGate, DirectWriter, direct_writer

__all__ = ["DEFAULT_PORT", "DevLink", "DevSynapse", "open_dev_link", "parse_cosmo_url"]

log: logging.Logger = logging.getLogger("cosmonapse.synapse.dev")

DEFAULT_PORT = 7070
#: Longest line the client reads; the server's own limit is what bounds publishes.
CLIENT_MAX_LINE = 64 * 1024 * 1024
#: Lines a client queues for its writer before ``publish`` waits.
DEFAULT_OUTBOX = 4096
_BATCH_BYTES = 256 * 1024
_PING = encode_line({"op": "ping"})

#: What the writer sends: a line, or lines plus the event their trailing ping's pong sets.
_Line = bytes | tuple[bytes, anyio.Event]


def _line_size(item: _Line) -> int:
    return len(item) if isinstance(item, bytes) else len(item[0])


_CLOSE_FLUSH_TIMEOUT = 2.0  # close() lets the writer send what is queued for this long


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
        # DevSynapse: one event per ping written on this connection, set by its pong.
        self.pending_pongs: deque[anyio.Event] = deque()
        #: Writes to the socket without a scheduling round (None: this stream has no such path).
        self.direct: DirectWriter | None = direct_writer(stream)

    def release_pongs(self) -> None:
        """The connection is gone: nobody waits for its pongs any more."""
        while self.pending_pongs:
            self.pending_pongs.popleft().set()

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
            stream = await connect_tcp(host, port)
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


def _pub_line(subject: str, signal: Signal) -> bytes:
    """The ``pub`` op for *signal* on *subject* (its frame is the Signal's JSON as a string)."""
    frame = encode_signal(signal).decode()
    return orjson.dumps({"op": "pub", "subject": subject, "frame": frame}, option=orjson.OPT_APPEND_NEWLINE)


def _describe(subject: str, signal: Signal) -> str:
    return f"{signal.type.value} {signal.id} on {subject}"


def _sub_line(sub: Subscription) -> bytes:
    """One ``sub`` op per subject of *sub* (each with its own sub_id)."""
    return b"".join(
        encode_line({"op": "sub", "sub_id": wid, "subject": subject, "queue_group": sub.queue_group})
        for wid, subject in sub.wire_ids()
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
        outbox_size: int = DEFAULT_OUTBOX,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> None:
        super().__init__(
            subscription_buffer=subscription_buffer, pending_limit=pending_limit, pending_bytes=pending_bytes
        )
        host, port, url_token = parse_cosmo_url(url)
        if token is not None and url_token is not None and token != url_token:
            raise ValueError("two different tokens given (URL ?token= and token=)")
        if publish_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("publish_timeout and connect_timeout must be > 0")
        if outbox_size < 1:
            raise ValueError("outbox_size must be >= 1")
        self.host = host
        self.port = port
        self.token: str | None = token if token is not None else url_token
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.max_line = max_line
        self.outbox_size = outbox_size
        self.reconnects: int = 0
        self._subs: dict[str, Subscription] = {}
        self._link: DevLink | None = None
        self._up: anyio.Event | None = None  # set while a connection is usable
        self._outbox: MemoryObjectSendStream[_Line] | None = None
        self._outbox_receive: MemoryObjectReceiveStream[_Line] | None = None
        self._writer_done: anyio.Event | None = None
        # True from the moment a line is handed to the writer until it comes back for more:
        # only when it is False and the outbox is empty may a publish write directly.
        self._writer_busy = True
        self._gate = DirectGate()  # when a publish may write directly (see sendnow.py)
        self._closing = False
        self._server_errors = LogThrottle()

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
        self._writer_done = anyio.Event()
        link = await self._open_link()
        try:
            await self._install(link)
        except BaseException:
            await link.aclose()
            raise
        self._outbox, outbox = anyio.create_memory_object_stream[_Line](self.outbox_size)
        self._outbox_receive = outbox
        tg.start_soon(self._supervise, link, name=f"dev-synapse-reader:{self.url}")
        tg.start_soon(self._write_loop, outbox, name=f"dev-synapse-writer:{self.url}")
        log.info("connected to dev bus %s", self.url)

    async def _shutdown(self) -> None:
        """Refuse new sends, let the writer flush what is queued (bounded), then hang up."""
        self._closing = True
        assert self._outbox is not None and self._writer_done is not None and self._up is not None
        self._outbox.close()
        if self._link is not None:
            with anyio.move_on_after(_CLOSE_FLUSH_TIMEOUT):
                await self._writer_done.wait()
        if self._outbox_receive is not None:
            self._outbox_receive.close()  # the writer may never have started
            self._outbox_receive = None
        link = self._link
        self._link = None
        self._up.set()  # wake publishers waiting for a connection: they see _closing
        if link is not None:
            link.release_pongs()
            await link.aclose()
        self._subs.clear()  # a later connect() must not restore subscriptions that ended here

    async def _open_link(self) -> DevLink:
        return await open_dev_link(
            self.host,
            self.port,
            token=self.token,
            connect_timeout=self.connect_timeout,
            max_line=self.max_line,
        )

    async def _install(self, link: DevLink) -> None:
        """Re-send every active subscription, then make *link* the live connection.

        The writer only uses ``self._link``, so nothing else writes to *link* here.
        """
        assert self._up is not None
        if self._closing:
            await link.aclose()  # close() raced the reconnect: the reader ends at once
            return
        data = b"".join(_sub_line(sub) for sub in dict.fromkeys(self._subs.values()))
        if data:
            await link.stream.send(data)
        self._link = link
        self._up.set()

    def _mark_down(self, link: DevLink) -> None:
        link.release_pongs()
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
            if self._closing:
                return
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
        """Deliver ``msg`` frames until the connection ends; returns why it ended.

        On asyncio the lines are mostly handled in the transport's read callback
        (``_read_inline``) while this task waits; it handles what that leaves.
        """
        with inline_reading(link.stream, functools.partial(self._read_inline, link)):
            return await self._read_lines(link)

    async def _read_lines(self, link: DevLink) -> str:
        reader = link.reader
        while True:
            try:
                line = await reader.receive_line()
            except LineTooLong as exc:
                self._bad_frame("a line", self.url, exc)
                continue
            except anyio.EndOfStream:
                return "the server closed the connection"
            except anyio.ClosedResourceError:
                return "connection closed"
            except (anyio.BrokenResourceError, OSError) as exc:
                return f"connection broken: {exc!r}"
            self._on_line(link, line)

    def _read_inline(self, link: DevLink, take: Callable[[int], bytes]) -> None:
        """Handle the lines that arrived, in the transport's read callback (``aiostream``):
        the reader task is not woken for them.  Never waits."""
        reader = link.reader
        while data := take(READ_CHUNK):
            reader.feed(data)
        while True:
            try:
                line = reader.next_line()
            except LineTooLong as exc:
                self._bad_frame("a line", self.url, exc)
                continue
            if line is None:
                return
            self._on_line(link, line)

    def _on_line(self, link: DevLink, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self._bad_frame("a line that is not JSON", self.url, exc)
            return
        if not isinstance(msg, dict):
            self._bad_frame("a line that is not a JSON object", self.url, type(msg).__name__)
            return
        op = msg.get("op")
        if op == "msg":
            self._on_msg(msg)
        elif op == "pong":
            if link.pending_pongs:
                link.pending_pongs.popleft().set()
        elif op == "err":
            since = self._server_errors.hit()
            if since is not None:
                log.warning(
                    "dev bus %s reported: %s (%d err lines since the last report)",
                    self.url,
                    msg.get("message"),
                    since,
                )

    def _on_msg(self, msg: dict[str, Any]) -> None:
        sub_id = msg.get("sub_id")
        sub = self._subs.get(sub_id) if isinstance(sub_id, str) else None
        if sub is None:
            return  # unsubscribed while in flight
        frame = msg.get("frame")
        if not isinstance(frame, str):
            self._bad_frame("a msg", msg.get("subject"), "its frame is not a string")
            return
        try:
            sig = decode_signal(frame)
        except SignalDecodeError as exc:
            self._bad_frame("a frame that is not a Signal", msg.get("subject"), exc)
            return
        if not sub.offer(sig, len(frame)):  # never waits
            self._dropped(sub, sig)  # over its limits: drop, count

    # -- writing -------------------------------------------------------------
    async def _write_loop(self, outbox: MemoryObjectReceiveStream[_Line]) -> None:
        """Send queued lines, coalescing what is waiting into one write (at most once)."""
        assert self._writer_done is not None
        try:
            async with outbox:
                while True:
                    self._writer_busy = False
                    batch, _ = await receive_batch(outbox, _line_size, _BATCH_BYTES)
                    self._writer_busy = True
                    chunks = [item if isinstance(item, bytes) else item[0] for item in batch]
                    waiters = [item[1] for item in batch if not isinstance(item, bytes)]
                    await self._write(chunks[0] if len(chunks) == 1 else b"".join(chunks), waiters)
                    self._gate.last_write = time.monotonic()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        finally:
            self._writer_done.set()

    async def _write(self, data: bytes, waiters: list[anyio.Event]) -> None:
        """Write *data* on the live connection (waiting for one); *waiters* get its pongs."""
        while True:
            link = self._link
            if link is None:
                if self._closing:
                    break
                assert self._up is not None
                await self._up.wait()
                continue
            link.pending_pongs.extend(waiters)  # before the write: the pong may beat our return
            try:
                await link.stream.send(data)
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                log.debug("dev bus %s: %d bytes lost with the connection (%r)", self.url, len(data), exc)
                await self._drop(link)
                return
        for event in waiters:
            event.set()

    def _enqueue_now(self, data: _Line, what: Callable[[], str]) -> _Line | None:
        """The part of ``_enqueue`` that never waits: None when *data* was written or queued,
        else what is still to be queued (*data* itself: nothing was sent).  *what* names the
        line for an error (built only then: ``publish_nowait`` runs for every Signal).

        A direct write happens only with the outbox empty, so a remainder it leaves
        always fits: what comes back is either None or all of *data*.
        """
        if self._closing or self._outbox is None:
            raise SynapseClosedError(f"DevSynapse {self.url} is closed; {what()} not sent")
        link = self._link
        if link is None:
            return data
        if not self._writer_busy and type(data) is bytes and link.direct is not None:
            data = self._write_now(link.direct, data)
            if not data:
                return None
        try:
            self._outbox.send_nowait(data)
            self._writer_busy = True  # what comes next must queue behind it
            self._gate.queued()
            return None
        except anyio.WouldBlock:
            bus_event("backpressure", "outbox")  # the outbox is full: the caller waits for the writer
            return data
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SynapseClosedError(f"DevSynapse {self.url} is closed; {what()} not sent") from None

    async def _enqueue(self, data: _Line, what: str) -> None:
        """Queue one line; waits (up to ``publish_timeout``) only for a connection or for room."""
        rest = self._enqueue_now(data, lambda: what)
        if rest is None:
            return
        data = rest
        outbox = self._outbox
        assert outbox is not None  # _enqueue_now raised if it were
        try:
            with anyio.fail_after(self.publish_timeout):
                while self._link is None:
                    if self._closing:
                        raise SynapseClosedError(f"DevSynapse {self.url} is closed; {what} not sent")
                    assert self._up is not None
                    await self._up.wait()
                await outbox.send(data)
            # The writer may have been handed the line directly (it was waiting, the outbox
            # stays empty): either way a direct write must not overtake it.
            self._writer_busy = True
            self._gate.queued()
        except TimeoutError:
            if self._link is None:
                raise SynapseError(
                    f"dev bus {self.url} unreachable for {self.publish_timeout:g}s; {what} not sent"
                ) from None
            raise SynapseError(
                f"dev bus {self.url} took nothing for {self.publish_timeout:g}s "
                f"(outbox full); {what} not sent"
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SynapseClosedError(f"DevSynapse {self.url} is closed; {what} not sent") from None

    def _write_now(self, direct: DirectWriter, data: bytes) -> bytes:
        """Write *data* straight to the socket if nothing is queued ahead; returns what is left.

        Only on a quiet connection (``DirectGate``): on a busy one lines queue up and
        leave together in the writer's next send.  The caller has checked that nothing is
        queued: ``_writer_busy`` is set by every path that hands the writer a line, until
        the writer waits on an empty outbox again.
        """
        if not self._gate.open():
            return data
        taken = direct(data)
        return data[taken:] if taken else data

    # -- Synapse surface -----------------------------------------------------
    async def publish(self, subject: str, signal: Signal) -> None:
        """Queue *signal*; during an outage waits up to ``publish_timeout``, then ``SynapseError``."""
        if self._tg is None:
            self._check_open(f"publish to {subject!r}")
        await self._enqueue(_pub_line(subject, signal), _describe(subject, signal))

    def publish_nowait(self, subject: str, signal: Signal) -> bool:
        """``publish`` when connected with room in the outbox (no waiting); else False, nothing sent."""
        if self._tg is None or self._closing or self._link is None:
            return False
        return self._enqueue_now(_pub_line(subject, signal), lambda: _describe(subject, signal)) is None

    async def _control(self, data: _Line, what: str) -> bool:
        """Queue a ``sub``/``unsub`` while connected (False when not: the reconnect restores the set)."""
        if self._link is None:
            return False
        try:
            await self._enqueue(data, what)
        except SynapseClosedError:
            raise
        except SynapseError:
            if self._link is not None:
                raise  # connected but the outbox stayed full: a real failure
            return False
        return True

    async def _on_subscribe(self, sub: Subscription) -> None:
        """Send the ``sub`` and a ``ping``; return once the server has answered the ping.

        From then on, anything published anywhere on the bus reaches this
        subscription (the server handles a connection's lines in order).
        """
        for wid, _subject in sub.wire_ids():
            self._subs[wid] = sub
        confirmed = anyio.Event()
        if not await self._control((_sub_line(sub) + _PING, confirmed), f"sub {sub.subject}"):
            return
        with anyio.move_on_after(self.publish_timeout):
            await confirmed.wait()
        if not confirmed.is_set():
            log.warning("dev bus %s did not confirm the subscription to %s in time", self.url, sub.subject)

    async def _on_unsubscribe(self, sub: Subscription) -> None:
        wids = [wid for wid, _subject in sub.wire_ids() if self._subs.pop(wid, None) is not None]
        if wids and not self._closing:
            lines = b"".join(encode_line({"op": "unsub", "sub_id": wid}) for wid in wids)
            await self._control(lines, f"unsub {sub.subject}")
