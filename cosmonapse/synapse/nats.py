"""``NatsSynapse``: the NATS adapter (§18) on our own client of the NATS core text protocol.

nats-py is asyncio-only; this client speaks the protocol over anyio TCP streams,
so one adapter serves asyncio and trio (docs/nats.md says why and what it costs).

Wire mapping: subject = the Cosmonapse subject verbatim, payload = the Signal's
UTF-8 JSON, ``queue_group`` = a NATS queue subscription of the same name; the W3C
trace context in ``meta`` (``traceparent``/``tracestate``) also travels as message
headers (HPUB), and headers on a received message (HMSG) fill in what the frame lacks.

Production parts: TLS (``tls://`` URLs, a ``tls=`` ``ssl.SSLContext``, mutual TLS with
a client certificate in that context), user/password, token, NKEY seeds and ``.creds``
files (a user JWT whose nonce signature is made with the ``nkeys`` package), ``no_echo``,
the server's ``max_payload``, cluster-advertised servers and lame-duck mode (a server
that says it is going away is left for another before it closes us).  Wrong credentials
and untrusted certificates fail ``connect()`` at once with ``NatsAuthError`` /
``NatsTLSError``, which say which.

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

import base64
import importlib
import logging
import os
import random
import re
import ssl
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import anyio
import attrs
from anyio import CancelScope
from anyio.abc import ByteStream, TaskGroup
from anyio.streams.tls import TLSStream

from ..codec import decode_signal, encode_signal
from ..errors import SignalDecodeError, SynapseClosedError, SynapseError
from ..signal import Signal
from .aiostream import connect_tcp, inline_reading
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
    HMsg,
    Info,
    Msg,
    Parser,
    ProtocolError,
    check_publish_subject,
    check_queue_group,
    check_subscribe_subject,
    encode_connect,
    encode_headers,
    encode_hpub_head,
    encode_pub_head,
    encode_sub,
    encode_unsub,
    parse_headers,
)
from .sendnow import DirectGate, direct_writer

__all__ = [
    "DEFAULT_URL",
    "NatsAuthError",
    "NatsSynapse",
    "NatsTLSError",
    "PayloadTooLargeError",
    "parse_servers",
]

log: logging.Logger = logging.getLogger("cosmonapse.synapse.nats")

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_PORT = 4222
#: The server's default max_payload; used until the first INFO says otherwise.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
_RECV_SIZE = 256 * 1024
_IO_ERRORS = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)
#: Trace-context keys of ``Signal.meta`` that also travel as NATS headers.
TRACE_HEADERS = ("traceparent", "tracestate")
#: A server in lame-duck mode is tried last for this long (the server's default lame_duck_duration).
LAME_DUCK_AVOID_S = 120.0
#: At most this long is spent spreading the moves of clients off a lame-duck server.
LAME_DUCK_SPREAD_S = 0.25
#: After a lame-duck move, Signals delivered on both connections are recognised this long.
MOVE_DEDUPE_S = 2.0
#: At most this many (subscription, Signal id) pairs are remembered for that.
MOVE_DEDUPE_MAX = 65536
_SEED = re.compile(r"^S[A-Z2-7]{57}$")


class PayloadTooLargeError(SynapseError, ValueError):
    """A publish is bigger than the server's ``max_payload``; nothing was sent."""


class NatsAuthError(SynapseError):
    """The server refused our credentials (or asked for some we did not give); not retried at connect."""


class NatsTLSError(SynapseError):
    """TLS could not be set up: an untrusted or wrong certificate, a refused client certificate, no TLS."""


@attrs.define(eq=False)
class _Server:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None
    discovered: bool = False
    tls: bool = False  # the URL said tls://
    tls_name: str | None = None  # the name its certificate is checked against (default: host)
    avoid_until: float = 0.0  # monotonic time: in lame-duck mode until then, tried last

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.hostport}"


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
        if url.scheme not in ("nats", "tls"):
            raise ValueError(f"NatsSynapse speaks nats:// and tls:// (no websocket), got {item!r}")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"bad port in NATS URL {item!r}") from exc
        user = unquote(url.username) if url.username else None
        password = unquote(url.password) if url.password is not None else None
        token = None
        if user is not None and password is None:
            user, token = None, user
        server = _Server(url.hostname or "127.0.0.1", port, user, password, token, tls=url.scheme == "tls")
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
        # Writes straight to the socket while nothing is queued and the connection was
        # quiet (see sendnow.py): a busy one coalesces in the writer.
        self.direct = direct_writer(stream)
        self.gate = DirectGate()
        self.wake = anyio.Event()
        self.room = anyio.Event()
        self.room_waiters = 0
        # One entry per PING we sent: an Event to set (flush) or None (pinger).
        self.pongs: deque[anyio.Event | None] = deque()
        self.outstanding_pings = 0
        self.leftover: list[Event] = []
        self.sent_sids: set[int] = set()
        self.scope: CancelScope | None = None
        self.tg: TaskGroup | None = None
        self.lost = False
        self.error: str | None = None
        #: The server accepts HPUB (INFO ``headers``).
        self.headers = bool(info.get("headers"))
        #: Set when this connection was left for another (lame-duck mode): the loop takes it up.
        self.moved_to: _Conn | None = None
        self.moving = False

    def write(self, data: bytes) -> None:
        """Send *data* now if nothing is queued ahead of it, else queue it for the writer task."""
        if self.writer_idle and not self.outbox and self.direct is not None and self.gate.open():
            taken = self.direct(data)
            if taken == len(data):
                return
            data = data[taken:]  # the rest goes first, through the writer
        self.outbox += data
        self.gate.queued()
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
        tls: ssl.SSLContext | None = None,
        tls_hostname: str | None = None,
        nkeys_seed: str | os.PathLike[str] | None = None,
        user_credentials: str | os.PathLike[str] | None = None,
        no_echo: bool = False,
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
        if (nkeys_seed is not None or user_credentials is not None) and _nkeys() is None:
            raise ImportError(
                "NKEY and .creds authentication sign with the nkeys package: pip install 'cosmonapse[nkeys]'"
            )
        if nkeys_seed is not None and user_credentials is not None:
            raise ValueError("give nkeys_seed or user_credentials, not both")
        #: The TLS context (server verification, client certificate); None: plain unless asked.
        self.tls: ssl.SSLContext | None = tls
        self.tls_hostname = tls_hostname
        self._tls_wanted = tls is not None or any(s.tls for s in self._pool)
        self._nkeys_seed = nkeys_seed
        self._user_credentials = user_credentials
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
        self.echo = echo and not no_echo
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.reconnects: int = 0
        #: Times this synapse left a server that entered lame-duck mode for another one.
        self.lame_duck_moves: int = 0
        self.last_error: str | None = None
        self._subs: dict[int, Subscription] = {}
        self._sids: dict[Subscription, list[int]] = {}
        self._sid_subject: dict[int, str] = {}
        self._next_sid = 1
        self._pub_heads: dict[str, bytes] = {}
        self._conn: _Conn | None = None
        self._headers = False  # the live connection takes HPUB
        # During a lame-duck move: (sid, Signal id) already filed, and until when (0: move in progress).
        self._move_seen: set[tuple[int, str]] | None = None
        self._move_seen_until = 0.0
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
        refused: type[SynapseError] = SynapseError
        for server in list(self._pool):
            try:
                conn = await self._handshake(server)
            except (*_IO_ERRORS, TimeoutError, SynapseError, ProtocolError) as exc:
                errors.append(f"{server}: {_describe(exc)}")
                if isinstance(exc, (NatsAuthError, NatsTLSError)):
                    refused = type(exc)  # the class that says which: credentials or certificates
                continue
            self._activate(conn)
            tg.start_soon(self._run, conn, name="nats-connection")
            return
        self.last_error = errors[-1] if errors else None
        raise refused("could not connect to NATS: " + "; ".join(errors))

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
            new = conn.moved_to
            if new is not None:
                self.lame_duck_moves += 1
                self._move_seen_until = time.monotonic() + MOVE_DEDUPE_S
                log.info("NATS server %s is in lame-duck mode: moved to %s", conn.server, new.server)
            else:
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
        self._headers = conn.headers
        self.max_payload = conn.max_payload
        conn.server.avoid_until = 0.0 if not conn.info.get("ldm") else conn.server.avoid_until
        self._learn_servers(conn.info, conn.server)
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
                conn.tg = tg
                if conn.error is not None:
                    tg.cancel_scope.cancel()
                tg.start_soon(self._guard, self._writer, conn, name="nats-writer")
                if self.ping_interval > 0:
                    tg.start_soon(self._guard, self._pinger, conn, name="nats-pinger")
                await self._guard(self._reader, conn)
        finally:
            conn.tg = None
            self._deactivate(conn)
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(conn.stream)
                if conn.moved_to is not None and self._closing:  # closed mid-move: drop the new one too
                    await anyio.aclose_forcefully(conn.moved_to.stream)
                    conn.moved_to = None

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
                    # Refused credentials or certificates are worth an ERROR: they will not heal alone.
                    level = logging.ERROR if isinstance(exc, (NatsAuthError, NatsTLSError)) else logging.DEBUG
                    log.log(level, "NATS reconnect attempt %d failed: %s", attempts, self.last_error)
                if self.max_reconnect_attempts is not None and attempts >= self.max_reconnect_attempts:
                    self._fail(f"gave up reconnecting to NATS after {attempts} attempts: {self.last_error}")
                    return None
            await anyio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, self.max_reconnect_wait)

    def _order_from(self, first: _Server) -> list[_Server]:
        """The pool starting at *first*; servers in lame-duck mode go last."""
        pool = self._pool
        idx = next((i for i, s in enumerate(pool) if s is first), 0)
        ordered = pool[idx:] + pool[:idx]
        now = time.monotonic()
        return [s for s in ordered if s.avoid_until <= now] + [s for s in ordered if s.avoid_until > now]

    def _learn_servers(self, info: dict, via: _Server) -> None:
        """Add the servers the cluster advertises (INFO ``connect_urls``) to the pool."""
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
                # Advertised addresses are often IPs: check certificates against the name we dialled.
                found.tls_name = via.tls_name or via.host
                self._pool.append(found)
                log.debug("NATS server discovered: %s", found)

    async def _handshake(self, server: _Server) -> _Conn:
        """Connect, read INFO, [TLS], send CONNECT (+ every active SUB) + PING, wait for the PONG."""
        with anyio.fail_after(self.connect_timeout):
            stream: ByteStream = await connect_tcp(server.host, server.port)
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
                tls = bool(info.get("tls_required")) or self._tls_wanted
                if tls:
                    stream = await self._start_tls(stream, server, info)
                if info.get("auth_required") and not (
                    server.user or server.token or self._nkeys_seed or self._user_credentials
                ):
                    raise NatsAuthError(
                        f"{server} requires authentication: pass user/password, a token, "
                        "nkeys_seed or user_credentials"
                    )
                frames = bytearray(encode_connect(await self._connect_options(server, info, tls)))
                sent = set(self._subs)
                for sid in sent:
                    frames += self._sub_frame(self._subs[sid], sid)
                frames += PING_FRAME
                try:
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
                                    raise NatsAuthError(
                                        f"{server} refused our credentials ({self._credentials(server)}): "
                                        f"{ev.message}"
                                    )
                                log.error("NATS server %s: -ERR %s", server, ev.message)
                            else:
                                early.append(ev)
                except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate shows up here
                    raise NatsTLSError(f"{server} ended TLS after the handshake: {_ssl_reason(exc)}") from exc
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        conn = _Conn(stream, parser, info, server)
        conn.leftover = early
        conn.sent_sids = sent
        return conn

    async def _start_tls(self, stream: ByteStream, server: _Server, info: dict) -> ByteStream:
        """Upgrade the connection after INFO (the NATS way); errors say what was wrong."""
        if not (info.get("tls_required") or info.get("tls_available")):
            raise NatsTLSError(
                f"{server} does not offer TLS, but this synapse asks for it (tls:// or tls=); "
                "configure tls {{...}} in the server or connect with nats://"
            )
        context = self.tls if self.tls is not None else ssl.create_default_context()
        name = self.tls_hostname or server.tls_name or server.host
        try:
            return await TLSStream.wrap(stream, hostname=name, ssl_context=context, standard_compatible=False)
        except ssl.SSLCertVerificationError as exc:
            raise NatsTLSError(
                f"{server}: the server's certificate is not trusted for {name!r}: {_ssl_reason(exc)} "
                "(give connect_synapse(..., tls=ssl_context) that trusts its CA: "
                "ssl.create_default_context(cafile=...))"
            ) from exc
        except ssl.SSLError as exc:
            raise NatsTLSError(f"{server}: TLS handshake failed: {_ssl_reason(exc)}") from exc

    def _credentials(self, server: _Server) -> str:
        """Which credentials we presented, for error messages (never the secret)."""
        if self._user_credentials is not None:
            return f"user JWT from {os.fspath(self._user_credentials)!r}"
        if self._nkeys_seed is not None:
            return "NKEY seed"
        if server.token:
            return "token"
        if server.user:
            return f"user {server.user!r} and password"
        return "none"

    async def _connect_options(self, server: _Server, info: dict, tls: bool) -> dict:
        version = getattr(sys.modules.get("cosmonapse"), "__version__", "0")
        opts: dict = {
            "verbose": False,
            "pedantic": False,
            "tls_required": tls,
            "lang": "python-cosmonapse",
            "version": version,
            "protocol": 1,
            "echo": self.echo,
            "headers": True,
            "no_responders": False,
        }
        if self.name:
            opts["name"] = self.name
        if self._user_credentials is not None or self._nkeys_seed is not None:
            opts.update(await self._signed_identity(info.get("nonce")))
        elif server.token:
            opts["auth_token"] = server.token
        elif server.user:
            opts["user"] = server.user
            opts["pass"] = server.password or ""
        return opts

    async def _signed_identity(self, nonce: object) -> dict[str, str]:
        """``jwt``/``nkey`` and the nonce's signature; the files are read at each connect (rotation)."""
        nkeys = _nkeys()
        assert nkeys is not None  # checked in __init__
        opts: dict[str, str] = {}
        if self._user_credentials is not None:
            jwt, seed = _read_creds(await _read_text(self._user_credentials), self._user_credentials)
            opts["jwt"] = jwt
        else:
            assert self._nkeys_seed is not None
            seed = _read_seed(self._nkeys_seed)
            if not _SEED.match(seed):
                seed = _read_seed((await _read_text(self._nkeys_seed)).strip())
        try:
            keys = nkeys.from_seed(seed.encode())
        except Exception as exc:
            raise NatsAuthError(f"the NKEY seed is not valid: {exc}") from None
        if "jwt" not in opts:
            opts["nkey"] = keys.public_key.decode()
        if isinstance(nonce, str):
            signature = keys.sign(nonce.encode())
            opts["sig"] = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return opts

    # -- per-connection tasks ----------------------------------------------------
    async def _reader(self, conn: _Conn) -> None:
        """Read and file what the server sends; on asyncio mostly in the transport's read
        callback while this task waits (``AioSocketStream.read_inline``), which does the same."""
        pending = conn.leftover
        conn.leftover = []
        stream = conn.stream
        feed = conn.parser.feed
        with inline_reading(stream, lambda take: self._on_events(conn, feed(take(_RECV_SIZE)))):
            while True:
                self._on_events(conn, pending)
                pending = feed(await stream.receive(_RECV_SIZE))

    def _on_events(self, conn: _Conn, events: list[Event]) -> None:
        subs = self._subs
        for ev in events:
            if type(ev) is Msg:
                sub = subs.get(ev.sid)
                if sub is None:
                    continue
                try:
                    sig = decode_signal(ev.payload)
                except SignalDecodeError as exc:
                    self._bad_frame("a frame that is not a Signal", ev.subject, exc)
                    continue
                if self._move_seen is not None and self._seen_twice(ev.sid, sig):
                    continue  # delivered on both connections of a lame-duck move
                if not sub.offer(sig, len(ev.payload)):  # never waits
                    self._dropped(sub, sig)  # over its limits: drop, count
            elif type(ev) is HMsg:
                self._file_with_headers(ev)
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
                self._learn_servers(ev.data, conn.server)
                if ev.data.get("ldm") and not conn.moving and conn.tg is not None:
                    log.info("NATS server %s entered lame-duck mode; moving elsewhere", conn.server)
                    conn.moving = True
                    conn.server.avoid_until = time.monotonic() + LAME_DUCK_AVOID_S
                    conn.tg.start_soon(self._leave_lame_duck, conn, name="nats-lame-duck-move")
            elif isinstance(ev, Err):
                self.last_error = f"{conn.server}: {ev.message}"
                log.error("NATS server %s: -ERR %s", conn.server, ev.message)

    def _file_with_headers(self, ev: HMsg) -> None:
        """An HMSG: the Signal from its payload, the trace context from its headers if the frame lacks it."""
        sub = self._subs.get(ev.sid)
        if sub is None:
            return
        if not ev.payload:
            return  # a status message (no responders...): nothing for a subscription
        try:
            sig = decode_signal(ev.payload)
        except SignalDecodeError as exc:
            self._bad_frame("a frame that is not a Signal", ev.subject, exc)
            return
        if self._move_seen is not None and self._seen_twice(ev.sid, sig):
            return
        headers = parse_headers(ev.headers)
        for key in TRACE_HEADERS:
            value = headers.get(key)
            if value and key not in sig.meta:
                sig.meta[key] = value  # a fresh Signal of ours: nobody else holds it yet
        if not sub.offer(sig, len(ev.payload) + len(ev.headers)):
            self._dropped(sub, sig)

    def _seen_twice(self, sid: int, sig: Signal) -> bool:
        """While a lame-duck move overlaps two connections: True for the second copy of a Signal."""
        seen = self._move_seen
        if seen is None:
            return False
        if self._move_seen_until and time.monotonic() > self._move_seen_until:
            self._move_seen = None
            return False
        key = (sid, sig.id)
        if key in seen:
            return True
        if len(seen) < MOVE_DEDUPE_MAX:
            seen.add(key)
        return False

    async def _leave_lame_duck(self, conn: _Conn) -> None:
        """Move off a server in lame-duck mode before it closes us: connect elsewhere, then switch.

        Make before break: the new connection is set up (TLS, auth, every SUB) while
        the old one still serves, so for a moment both are subscribed; a message
        delivered on both is filed once (Signals seen during the move are recognised
        by subscription and Signal id until ``MOVE_DEDUPE_S`` after the switch).
        Then publishes wait for the new connection, the old one unsubscribes and is
        flushed (everything it had for us is read, everything we sent reached the
        server) and the loop switches over.  Nothing is lost or doubled by the move.
        """
        await anyio.sleep(random.random() * LAME_DUCK_SPREAD_S)  # allowed: spread a cluster's clients
        new: _Conn | None = None
        self._move_seen, self._move_seen_until = set(), 0.0  # from before the new SUBs exist
        for server in self._order_from(conn.server):
            if server is conn.server or server.avoid_until > time.monotonic():
                continue
            try:
                new = await self._handshake(server)
                break
            except (*_IO_ERRORS, TimeoutError, SynapseError, ProtocolError) as exc:
                log.debug("NATS lame-duck move to %s failed: %s", server, _describe(exc))
        if new is None:
            self._move_seen = None
            log.warning("NATS server %s is in lame-duck mode and no other server answered", conn.server)
            return  # stay until it closes us; the reconnect loop takes over then
        if self._conn is conn:  # publishes from now on wait for the new connection
            self._conn = None
            self._up = anyio.Event()
        try:
            conn.write(b"".join(encode_unsub(sid) for sid in self._subs))
            with anyio.move_on_after(self.drain_timeout):
                await self._ping(conn)
        except BaseException:
            self._move_seen = None
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(new.stream)
            raise
        conn.moved_to = new
        conn.kill(f"left for {new.server}: lame-duck mode")

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
            conn.gate.last_write = time.monotonic()
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
        """Publish *signal*'s JSON on *subject* (waits through an outage up to publish_timeout).

        A Signal whose ``meta`` carries W3C trace context goes out with it as headers too.
        """
        headers = self._trace_headers(signal)
        await self.publish_bytes(subject, encode_signal(signal), headers=headers)

    def _trace_headers(self, signal: Signal) -> dict[str, str] | None:
        """The W3C trace context *signal*'s ``meta`` carries, as NATS headers (None: none to send)."""
        meta = signal.meta
        if meta and self._headers and ("traceparent" in meta or "tracestate" in meta):
            return {k: meta[k] for k in TRACE_HEADERS if isinstance(meta.get(k), str)} or None
        return None

    def _check_size(self, subject: str, size: int) -> None:
        """Refuse a message over ``max_payload`` before anything waits or is queued."""
        if size > self.max_payload:
            raise _too_large(subject, size, self.max_payload)

    async def publish_bytes(
        self, subject: str, payload: bytes, *, reply: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Publish raw bytes: the layer under ``publish`` (tools, benchmarks, foreign frames).

        With *headers* the message goes out as HPUB (the server must support headers).
        """
        if self._tg is None:
            self._check_open(f"publish to {subject!r}")
        if headers is not None:
            await self._publish_headers(subject, payload, reply, headers)
            return
        if reply is None:
            head = self._pub_head(subject)
        else:
            head = encode_pub_head(check_publish_subject(subject), check_publish_subject(reply))
        self._check_size(subject, len(payload))
        conn = await self._writable(f"publish to {subject!r}")
        self._put(conn, subject, head, payload)

    def publish_nowait(self, subject: str, signal: Signal) -> bool:
        """``publish`` when the connection is up and its outbox has room (no waiting); else False.

        False, with nothing sent, also for a Signal that carries trace headers (``publish``
        sends those).
        """
        if self._tg is None or self._closing or self._trace_headers(signal) is not None:
            return False
        conn = self._conn
        if conn is None or len(conn.outbox) >= self.outbox_limit:
            return False
        payload = encode_signal(signal)
        self._check_size(subject, len(payload))
        self._put(conn, subject, self._pub_head(subject), payload)
        return True

    @staticmethod
    def _put(conn: _Conn, subject: str, head: bytes, payload: bytes) -> None:
        """Write one PUB on *conn* (it has room): at once when nothing is queued, else into the outbox."""
        size = len(payload)
        if size > conn.max_payload:
            raise _too_large(subject, size, conn.max_payload)
        if conn.writer_idle and not conn.outbox:  # may go straight out: one piece
            conn.write(b"".join((head, b"%d\r\n" % size, payload, b"\r\n")))
            return
        # Into the outbox: every publish made before the writer next runs goes out
        # in one send (one syscall, not one each).
        conn.outbox += head
        conn.outbox += b"%d\r\n" % size
        conn.outbox += payload
        conn.write(b"\r\n")

    async def _publish_headers(
        self, subject: str, payload: bytes, reply: str | None, headers: dict[str, str]
    ) -> None:
        block = encode_headers(headers)
        head = encode_hpub_head(
            check_publish_subject(subject), check_publish_subject(reply) if reply is not None else None
        )
        size = len(block) + len(payload)
        self._check_size(subject, size)
        conn = await self._writable(f"publish to {subject!r}")
        if not conn.headers:
            raise SynapseError(f"NATS server {conn.server} does not support headers; {subject!r} not sent")
        if size > conn.max_payload:
            raise _too_large(subject, size, conn.max_payload)
        conn.outbox += head
        conn.outbox += b"%d %d\r\n" % (len(block), size)
        conn.outbox += block
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


def _nkeys() -> Any:
    """The ``nkeys`` module (the ``nkeys`` extra), or None when it is not installed."""
    try:
        return importlib.import_module("nkeys")  # optional and untyped: imported by name
    except ImportError:
        return None


async def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        return await anyio.Path(path).read_text()
    except OSError as exc:
        raise NatsAuthError(f"cannot read NATS credentials from {os.fspath(path)!r}: {exc}") from None


def _read_seed(value: str | os.PathLike[str]) -> str:
    return value if isinstance(value, str) else os.fspath(value)


def _read_creds(text: str, path: str | os.PathLike[str]) -> tuple[str, str]:
    """(user JWT, seed) from a ``.creds`` file: the two ``-----BEGIN ...-----`` blocks."""
    blocks = re.findall(r"-{3,}[^\n]*BEGIN[^\n]*-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}[^\n]*END", text)
    jwt = next((b for b in blocks if b.startswith("eyJ")), None)
    seed = next((b for b in blocks if _SEED.match(b)), None)
    if jwt is None or seed is None:
        raise NatsAuthError(
            f"{os.fspath(path)!r} is not a NATS .creds file (need a USER JWT and a USER NKEY SEED block)"
        )
    return jwt, seed


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    return exc.reason or str(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, anyio.EndOfStream):
        return "connection closed by the server"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
