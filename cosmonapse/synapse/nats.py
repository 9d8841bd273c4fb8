"""``NatsSynapse``: the NATS adapter (§18) on our own client of the NATS core text protocol.

nats-py is asyncio-only; this client speaks the protocol over anyio TCP streams,
so one adapter serves asyncio and trio (docs/nats.md says why and what it costs).

Wire mapping: subject = the Cosmonapse subject verbatim, payload = the Signal's
UTF-8 JSON, ``queue_group`` = a NATS queue subscription of the same name.

Tasks, all in the synapse's task group:

* the connection loop: serves one connection at a time and reconnects with
  backoff across the configured and the discovered (INFO ``connect_urls``) servers;
* per connection: a reader (parses, answers PING, files each MSG into its
  subscription's buffer — it never awaits a handler and never waits for a
  subscription: one over its pending limits drops and counts, as NATS clients
  do for a slow consumer), a writer (drains the outbox, so many small publishes
  go out in one write) and a pinger (finds dead peers).
"""

from __future__ import annotations

import logging
import random
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

import anyio
import attrs
from anyio import CancelScope
from anyio.abc import ByteStream, TaskGroup

from ..codec import decode_signal, encode_signal
from ..errors import SignalDecodeError, SynapseClosedError, SynapseError
from ..signal import Signal
from .base import (
    DEFAULT_PENDING_BYTES,
    DEFAULT_PENDING_LIMIT,
    DEFAULT_SUBSCRIPTION_BUFFER,
    AnyHandler,
    Subscription,
    Synapse,
)
from .nats_protocol import (
    PING,
    PING_FRAME,
    PONG,
    PONG_FRAME,
    Err,
    Event,
    Info,
    Msg,
    Parser,
    ProtocolError,
    check_publish_subject,
    check_queue_group,
    check_subscribe_subject,
    encode_connect,
    encode_pub_head,
    encode_sub,
    encode_unsub,
)

__all__ = ["DEFAULT_URL", "NatsSynapse", "PayloadTooLargeError", "parse_servers"]

log: logging.Logger = logging.getLogger("cosmonapse.synapse.nats")

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_PORT = 4222
#: The server's default max_payload; used until the first INFO says otherwise.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
_RECV_SIZE = 256 * 1024
_IO_ERRORS = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class PayloadTooLargeError(SynapseError, ValueError):
    """A publish is bigger than the server's ``max_payload``; nothing was sent."""


@attrs.define(eq=False)
class _Server:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None
    discovered: bool = False

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"nats://{self.hostport}"


def parse_servers(servers: str | list[str] | tuple[str, ...]) -> list[_Server]:
    """``"nats://h:p,h2:p2"`` or a list of URLs → servers; credentials may sit in the URL."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    pool: list[_Server] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        if "://" not in text:
            text = "nats://" + text
        url = urlsplit(text)
        if url.scheme != "nats":
            raise ValueError(f"NatsSynapse speaks plain nats:// only (no TLS/websocket yet), got {item!r}")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"bad port in NATS URL {item!r}") from exc
        user = unquote(url.username) if url.username else None
        password = unquote(url.password) if url.password is not None else None
        token = None
        if user is not None and password is None:
            user, token = None, user
        server = _Server(url.hostname or "127.0.0.1", port, user, password, token)
        if all((s.host, s.port) != (server.host, server.port) for s in pool):
            pool.append(server)
    if not pool:
        raise ValueError(f"no NATS server in {servers!r}")
    return pool


class _Conn:
    """One live TCP connection: its stream, outbox and PONG waiters."""

    def __init__(self, stream: ByteStream, parser: Parser, info: dict, server: _Server) -> None:
        self.stream = stream
        self.parser = parser
        self.info = info
        self.server = server
        self.max_payload = int(info.get("max_payload") or DEFAULT_MAX_PAYLOAD)
        self.outbox = bytearray()
        self.writer_idle = False
        self.wake = anyio.Event()
        self.room = anyio.Event()
        self.room_waiters = 0
        # One entry per PING we sent: an Event to set (flush) or None (pinger).
        self.pongs: deque[anyio.Event | None] = deque()
        self.outstanding_pings = 0
        self.leftover: list[Event] = []
        self.sent_sids: set[int] = set()
        self.scope: CancelScope | None = None
        self.lost = False
        self.error: str | None = None

    def write(self, data: bytes) -> None:
        """Queue *data* for the writer task."""
        self.outbox += data
        if self.writer_idle:
            self.writer_idle = False
            self.wake.set()

    def kill(self, reason: str) -> None:
        """Mark the connection broken; its serve scope ends and the loop reconnects."""
        if self.error is None:
            self.error = reason
        if self.scope is not None:
            self.scope.cancel()


class NatsSynapse(Synapse):
    """A Synapse over NATS (``nats://host:port``), for asyncio and trio.

    Publishing while the connection is down waits up to ``publish_timeout``
    seconds for the reconnect, then raises SynapseError (nothing is buffered
    unboundedly, nothing is sent twice).  A publish that returned sits in the
    outbox of a live connection: NATS core delivers it at most once.
    """

    def __init__(
        self,
        servers: str | list[str] | tuple[str, ...] = DEFAULT_URL,
        *,
        name: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        connect_timeout: float = 2.0,
        allow_reconnect: bool = True,
        reconnect_wait: float = 0.05,
        max_reconnect_wait: float = 2.0,
        max_reconnect_attempts: int | None = None,
        publish_timeout: float = 10.0,
        ping_interval: float = 30.0,
        max_outstanding_pings: int = 2,
        outbox_limit: int = 8 * 1024 * 1024,
        drain_timeout: float = 2.0,
        echo: bool = True,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> None:
        super().__init__(
            subscription_buffer=subscription_buffer, pending_limit=pending_limit, pending_bytes=pending_bytes
        )
        self._pool = parse_servers(servers)
        for server in self._pool:
            server.user = server.user or user
            server.password = server.password or password
            server.token = server.token or token
        self.url: str = ",".join(str(s) for s in self._pool)
        self.name = name
        self.connect_timeout = connect_timeout
        self.allow_reconnect = allow_reconnect
        self.reconnect_wait = reconnect_wait
        self.max_reconnect_wait = max_reconnect_wait
        self.max_reconnect_attempts = max_reconnect_attempts
        self.publish_timeout = publish_timeout
        self.ping_interval = ping_interval
        self.max_outstanding_pings = max_outstanding_pings
        self.outbox_limit = outbox_limit
        self.drain_timeout = drain_timeout
        self.echo = echo
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.reconnects: int = 0
        self.last_error: str | None = None
        self._subs: dict[int, Subscription] = {}
        self._sids: dict[Subscription, list[int]] = {}
        self._sid_subject: dict[int, str] = {}
        self._next_sid = 1
        self._pub_heads: dict[str, bytes] = {}
        self._conn: _Conn | None = None
        self._up: anyio.Event | None = None
        self._closing = False
        self._failure: str | None = None

    # -- state ---------------------------------------------------------------
    @property
    def connected_url(self) -> str | None:
        """The server the live connection goes to, or None while down."""
        conn = self._conn
        return str(conn.server) if conn is not None else None

    @property
    def servers(self) -> list[str]:
        """Configured plus discovered servers, in the order reconnects try them."""
        return [str(s) for s in self._pool]

    # -- life cycle ------------------------------------------------------------
    async def _open(self, tg: TaskGroup) -> None:
        self._closing = False
        self._failure = None
        self._up = anyio.Event()
        errors: list[str] = []
        for server in list(self._pool):
            try:
                conn = await self._handshake(server)
            except (*_IO_ERRORS, TimeoutError, SynapseError, ProtocolError) as exc:
                errors.append(f"{server}: {_describe(exc)}")
                continue
            self._activate(conn)
            tg.start_soon(self._run, conn, name="nats-connection")
            return
        self.last_error = errors[-1] if errors else None
        raise SynapseError("could not connect to NATS: " + "; ".join(errors))

    async def _shutdown(self) -> None:
        self._closing = True
        conn = self._conn
        if conn is not None:
            with anyio.move_on_after(self.drain_timeout):
                try:
                    await self._ping(conn)
                except SynapseError:
                    pass
            conn.kill("closed")
        if self._up is not None:
            self._up.set()
        self._subs.clear()  # a later connect() must not restore subscriptions that ended here
        self._sids.clear()
        self._sid_subject.clear()

    # -- connection loop -------------------------------------------------------
    async def _run(self, conn: _Conn) -> None:
        while True:
            await self._serve(conn)
            if self._closing:
                return
            self.last_error = f"{conn.server}: {conn.error or 'connection lost'}"
            if not self.allow_reconnect:
                self._fail(f"connection to NATS lost ({self.last_error}) and reconnect is off")
                return
            log.warning("NATS connection lost (%s); reconnecting", self.last_error)
            new = await self._reconnect(conn.server)
            if new is None:
                return
            conn = new
            self.reconnects += 1
            self._activate(conn)
            log.info("NATS reconnected to %s; %d subscriptions restored", conn.server, len(self._subs))
            self._notify_reconnected()

    def _activate(self, conn: _Conn) -> None:
        # Subscriptions made or dropped while the handshake was in flight.
        for sid, sub in self._subs.items():
            if sid not in conn.sent_sids:
                conn.write(self._sub_frame(sub, sid))
        for sid in conn.sent_sids - self._subs.keys():
            conn.write(encode_unsub(sid))
        conn.sent_sids = set()
        self._conn = conn
        self.max_payload = conn.max_payload
        self._learn_servers(conn.info)
        if self._up is not None:
            self._up.set()

    def _deactivate(self, conn: _Conn) -> None:
        if self._conn is conn:
            self._conn = None
            self._up = anyio.Event()
        conn.lost = True
        conn.room.set()
        while conn.pongs:
            waiter = conn.pongs.popleft()
            if waiter is not None:
                waiter.set()

    def _fail(self, message: str) -> None:
        self._failure = message
        log.error("%s", message)
        if self._up is not None:
            self._up.set()

    async def _serve(self, conn: _Conn) -> None:
        try:
            async with anyio.create_task_group() as tg:
                conn.scope = tg.cancel_scope
                if conn.error is not None:
                    tg.cancel_scope.cancel()
                tg.start_soon(self._guard, self._writer, conn, name="nats-writer")
                if self.ping_interval > 0:
                    tg.start_soon(self._guard, self._pinger, conn, name="nats-pinger")
                await self._guard(self._reader, conn)
        finally:
            self._deactivate(conn)
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(conn.stream)

    async def _guard(self, fn: Callable[[_Conn], Awaitable[None]], conn: _Conn) -> None:
        try:
            await fn(conn)
        except (*_IO_ERRORS, ProtocolError) as exc:
            conn.kill(_describe(exc))
        except Exception as exc:
            log.exception("NATS connection task failed")
            conn.kill(f"internal error: {exc!r}")
        else:
            conn.kill("connection task ended")

    async def _reconnect(self, lost: _Server) -> _Conn | None:
        attempts = 0
        delay = self.reconnect_wait
        while True:
            for server in self._order_from(lost):
                if self._closing:
                    return None
                attempts += 1
                try:
                    return await self._handshake(server)
                except (*_IO_ERRORS, TimeoutError, SynapseError, ProtocolError) as exc:
                    self.last_error = f"{server}: {_describe(exc)}"
                    log.debug("NATS reconnect attempt %d failed: %s", attempts, self.last_error)
                if self.max_reconnect_attempts is not None and attempts >= self.max_reconnect_attempts:
                    self._fail(f"gave up reconnecting to NATS after {attempts} attempts: {self.last_error}")
                    return None
            await anyio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, self.max_reconnect_wait)

    def _order_from(self, first: _Server) -> list[_Server]:
        pool = self._pool
        idx = next((i for i, s in enumerate(pool) if s is first), 0)
        return pool[idx:] + pool[:idx]

    def _learn_servers(self, info: dict) -> None:
        urls = info.get("connect_urls")
        if not isinstance(urls, list):
            return
        template = self._pool[0]
        for text in urls:
            if not isinstance(text, str):
                continue
            try:
                (found,) = parse_servers(text)
            except ValueError:
                continue
            if all((s.host, s.port) != (found.host, found.port) for s in self._pool):
                found.discovered = True
                found.user, found.password, found.token = template.user, template.password, template.token
                self._pool.append(found)
                log.debug("NATS server discovered: %s", found)

    async def _handshake(self, server: _Server) -> _Conn:
        """Connect, read INFO, send CONNECT + every active SUB + PING, wait for the PONG."""
        with anyio.fail_after(self.connect_timeout):
            stream = await anyio.connect_tcp(server.host, server.port)
            try:
                parser = Parser()
                early: list[Event] = []
                info: dict | None = None
                while info is None:
                    for ev in parser.feed(await stream.receive(_RECV_SIZE)):
                        if info is not None:
                            early.append(ev)
                        elif isinstance(ev, Info):
                            info = ev.data
                        else:
                            raise ProtocolError(f"expected INFO first, got {ev!r}")
                if info.get("tls_required"):
                    raise SynapseError(f"{server} requires TLS, which NatsSynapse does not support yet")
                if info.get("auth_required") and not (server.user or server.token):
                    raise SynapseError(f"{server} requires authentication: pass user/password or token")
                frames = bytearray(encode_connect(self._connect_options(server)))
                sent = set(self._subs)
                for sid in sent:
                    frames += self._sub_frame(self._subs[sid], sid)
                frames += PING_FRAME
                await stream.send(bytes(frames))
                pong = False
                while not pong:
                    for ev in parser.feed(await stream.receive(_RECV_SIZE)):
                        if pong:
                            early.append(ev)
                        elif ev is PONG:
                            pong = True
                        elif isinstance(ev, Err):
                            if "auth" in ev.message.lower():
                                raise SynapseError(f"{server} refused the connection: {ev.message}")
                            log.error("NATS server %s: -ERR %s", server, ev.message)
                        else:
                            early.append(ev)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        conn = _Conn(stream, parser, info, server)
        conn.leftover = early
        conn.sent_sids = sent
        return conn

    def _connect_options(self, server: _Server) -> dict:
        version = getattr(sys.modules.get("cosmonapse"), "__version__", "0")
        opts: dict = {
            "verbose": False,
            "pedantic": False,
            "tls_required": False,
            "lang": "python-cosmonapse",
            "version": version,
            "protocol": 1,
            "echo": self.echo,
            "headers": False,
            "no_responders": False,
        }
        if self.name:
            opts["name"] = self.name
        if server.token:
            opts["auth_token"] = server.token
        elif server.user:
            opts["user"] = server.user
            opts["pass"] = server.password or ""
        return opts

    # -- per-connection tasks ----------------------------------------------------
    async def _reader(self, conn: _Conn) -> None:
        pending = conn.leftover
        conn.leftover = []
        stream = conn.stream
        feed = conn.parser.feed
        subs = self._subs
        while True:
            for ev in pending:
                if type(ev) is Msg:
                    sub = subs.get(ev.sid)
                    if sub is None:
                        continue
                    try:
                        sig = decode_signal(ev.payload)
                    except SignalDecodeError as exc:
                        self._bad_frame("a frame that is not a Signal", ev.subject, exc)
                        continue
                    if not sub.offer(sig, len(ev.payload)):  # never waits
                        self._dropped(sub, sig)  # over its limits: drop, count
                elif ev is PING:
                    conn.write(PONG_FRAME)
                elif ev is PONG:
                    conn.outstanding_pings = 0
                    if conn.pongs:
                        waiter = conn.pongs.popleft()
                        if waiter is not None:
                            waiter.set()
                elif isinstance(ev, Info):
                    conn.info.update(ev.data)
                    conn.max_payload = int(conn.info.get("max_payload") or conn.max_payload)
                    self.max_payload: int = conn.max_payload
                    self._learn_servers(ev.data)
                    if ev.data.get("ldm"):
                        log.info("NATS server %s entered lame duck mode", conn.server)
                elif isinstance(ev, Err):
                    self.last_error = f"{conn.server}: {ev.message}"
                    log.error("NATS server %s: -ERR %s", conn.server, ev.message)
            pending = feed(await stream.receive(_RECV_SIZE))

    async def _writer(self, conn: _Conn) -> None:
        stream = conn.stream
        while True:
            if not conn.outbox:
                conn.wake = anyio.Event()
                conn.writer_idle = True
                await conn.wake.wait()
                continue
            data = conn.outbox
            conn.outbox = bytearray()
            await stream.send(cast(bytes, data))  # a bytearray: the socket takes any buffer, no copy
            if conn.room_waiters:
                room, conn.room = conn.room, anyio.Event()
                room.set()

    async def _pinger(self, conn: _Conn) -> None:
        while True:
            await anyio.sleep(self.ping_interval)
            if conn.outstanding_pings >= self.max_outstanding_pings:
                conn.kill(f"stale connection: {conn.outstanding_pings} PINGs without a PONG")
                return
            conn.outstanding_pings += 1
            conn.pongs.append(None)
            conn.write(PING_FRAME)

    # -- writing -------------------------------------------------------------------
    async def _writable(self, what: str) -> _Conn:
        """The live connection with room in its outbox; waits (bounded) through outages."""
        conn = self._conn
        if conn is not None and len(conn.outbox) < self.outbox_limit:
            return conn
        try:
            with anyio.fail_after(self.publish_timeout):
                while True:
                    if self._tg is None or self._closing:
                        raise SynapseClosedError(f"NatsSynapse is closed; {what} not sent")
                    if self._failure is not None:
                        raise SynapseError(f"{self._failure}; {what} not sent")
                    conn = self._conn
                    if conn is None:
                        assert self._up is not None
                        await self._up.wait()
                    elif len(conn.outbox) >= self.outbox_limit:
                        conn.room_waiters += 1
                        try:
                            await conn.room.wait()
                        finally:
                            conn.room_waiters -= 1
                    else:
                        return conn
        except TimeoutError:
            if self._conn is None:
                why = f"not connected to NATS (last error: {self.last_error})"
            else:
                why = f"the outbox stayed above {self.outbox_limit} bytes (is the server reading?)"
            raise SynapseError(f"{what} not sent after {self.publish_timeout}s: {why}") from None

    def _pub_head(self, subject: str) -> bytes:
        head = self._pub_heads.get(subject)
        if head is None:
            head = encode_pub_head(check_publish_subject(subject))
            if len(self._pub_heads) > 4096:
                self._pub_heads.clear()
            self._pub_heads[subject] = head
        return head

    async def publish(self, subject: str, signal: Signal) -> None:
        """Publish *signal*'s JSON on *subject* (waits through an outage up to publish_timeout)."""
        await self.publish_bytes(subject, encode_signal(signal))

    async def publish_bytes(self, subject: str, payload: bytes, *, reply: str | None = None) -> None:
        """Publish raw bytes: the layer under ``publish`` (tools, benchmarks, foreign frames)."""
        if self._tg is None:
            self._check_open(f"publish to {subject!r}")
        if reply is None:
            head = self._pub_head(subject)
        else:
            head = encode_pub_head(check_publish_subject(subject), check_publish_subject(reply))
        size = len(payload)
        if size > self.max_payload:
            raise _too_large(subject, size, self.max_payload)
        conn = await self._writable(f"publish to {subject!r}")
        if size > conn.max_payload:
            raise _too_large(subject, size, conn.max_payload)
        # Into the outbox, not onto the socket: every publish made before the
        # writer next runs goes out in one send (one syscall, not one each).
        conn.outbox += head
        conn.outbox += b"%d\r\n" % size
        conn.outbox += payload
        conn.write(b"\r\n")

    async def _ping(self, conn: _Conn) -> None:
        waiter = anyio.Event()
        conn.pongs.append(waiter)
        conn.write(PING_FRAME)
        await waiter.wait()
        if conn.lost:
            raise SynapseError(f"connection to {conn.server} lost before the server answered PING")

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the server has processed everything sent so far (a PING/PONG round trip).

        Use it after ``subscribe`` when another connection is about to publish:
        ``subscribe`` itself does not wait for the server.
        """
        try:
            with anyio.fail_after(self.publish_timeout if timeout_s is None else timeout_s):
                conn = await self._writable("flush")
                await self._ping(conn)
        except TimeoutError:
            raise SynapseError("NATS flush timed out") from None

    # -- subscriptions -----------------------------------------------------------------
    def _sub_frame(self, sub: Subscription, sid: int) -> bytes:
        queue = check_queue_group(sub.queue_group) if sub.queue_group is not None else None
        return encode_sub(check_subscribe_subject(self._sid_subject[sid]), sid, queue)

    async def subscribe(
        self, subject: str | Sequence[str], handler: AnyHandler, *, queue_group: str | None = None
    ) -> Subscription:
        # Validate before the base starts a pump, so bad input costs nothing.
        for one in (subject,) if isinstance(subject, str) else subject:
            check_subscribe_subject(one)
        if queue_group is not None:
            check_queue_group(queue_group)
        return await super().subscribe(subject, handler, queue_group=queue_group)

    async def _on_subscribe(self, sub: Subscription) -> None:
        sids = []
        frames = b""
        for subject in sub.subjects:  # one SID per subject, all feeding the one Subscription
            sid = self._next_sid
            self._next_sid += 1
            self._sid_subject[sid] = subject
            frames += self._sub_frame(sub, sid)
            sids.append(sid)
        for sid in sids:
            self._subs[sid] = sub
        self._sids[sub] = sids
        conn = self._conn
        if conn is not None:
            conn.write(frames)
        # While down, the reconnect handshake sends them with the others.

    async def _on_unsubscribe(self, sub: Subscription) -> None:
        sids = self._sids.pop(sub, None)
        if not sids:
            return
        conn = self._conn
        for sid in sids:
            self._subs.pop(sid, None)
            self._sid_subject.pop(sid, None)
            if conn is not None:
                conn.write(encode_unsub(sid))


def _too_large(subject: str, size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"payload of {size} bytes for {subject!r} exceeds the NATS server's max_payload of {limit} bytes; "
        "nothing was sent (raise max_payload in the server config or send less)"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, anyio.EndOfStream):
        return "connection closed by the server"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
