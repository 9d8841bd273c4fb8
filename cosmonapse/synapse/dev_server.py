"""The ``cosmo://`` dev bus server (§17), on anyio so it runs under asyncio and trio.

Byte-compatible with the reference server for every op of §17.3, and better where
peers cannot tell the difference:

* Each connection has a bounded outbox drained by its own writer task, so a
  publisher only ever appends to outboxes and never waits for a subscriber.  A
  connection whose outbox overflows (too many messages or bytes queued) is sent
  an ``err`` (best effort) and disconnected, like a NATS slow consumer.
* Lines are read with a limit (default 1 MiB, the reference: 64 KiB and then the
  connection dies); an over-long line gets an ``err`` and is skipped.
* Bad JSON, non-UTF-8 bytes, non-object JSON and unknown ops get an ``err`` and
  the connection keeps serving.
* An optional shared token: the first line must then be
  ``{"op":"auth","token":"..."}`` (answered ``{"op":"auth_ok"}``); anything else,
  or a wrong token, gets an ``err`` and the connection is closed.  Before it,
  lines are short and the wait is bounded; failed attempts are throttled per
  address (``dev_limits.py``).
* A connection cap and a budget for all outboxes together; subjects checked
  (no publishing to wildcards); a namespace belongs to the connection that
  registered it until it disconnects.
* One connection's failure stays its own: nothing that happens while a
  connection is served or cleaned up (a reset, a refused goodbye, a bug in an
  op) reaches the server's task group; it is logged and that connection ends.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, cast

import anyio
import attrs
import orjson
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..telemetry import bus_event, refresh
from .aiostream import READ_CHUNK, accept, inline_reading
from .dev_limits import DEFAULT_LIMITS, AuthThrottle, DevBusLimits, subject_error
from .framing import DEFAULT_MAX_LINE, LineReader, LineTooLong, encode_line, receive_batch
from .index import SubscriptionIndex
from .sendnow import DirectGate, DirectWriter, direct_writer

__all__ = ["DEFAULT_OUTBOX_BYTES", "DEFAULT_OUTBOX_SIZE", "DevBusLimits", "DevSynapseServer", "ServerStats"]

log: logging.Logger = logging.getLogger("cosmonapse.synapse.dev_server")

#: Messages a connection may have queued before it counts as a slow consumer.
DEFAULT_OUTBOX_SIZE = 8192
#: Bytes a connection may have queued before it counts as a slow consumer.
DEFAULT_OUTBOX_BYTES = 64 * 1024 * 1024

_WELCOME = encode_line({"op": "welcome"})
_PONG = encode_line({"op": "pong"})
_AUTH_OK = encode_line({"op": "auth_ok"})
_BATCH_BYTES = 256 * 1024
_FLUSH_TIMEOUT = 5.0  # a closing connection's writer gets this long to drain its outbox
_GOODBYE_TIMEOUT = 0.5  # best-effort err before closing a refused or slow connection
_REFUSE_TIMEOUT = 0.05  # the err to a connection over the cap: its send buffer is empty, or we give up
_SUBJECT_CACHE = 4096  # checked subjects remembered (cleared when full)
_CONN_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class _ReadingOver(Exception):
    """Raised by the inline reader once its connection is closing: ends the reader task's wait."""


def _err(message: str) -> bytes:
    return encode_line({"op": "err", "message": message})


@attrs.define
class ServerStats:
    """Counters, for tests, logs and the CLI."""

    connections_total: int = 0
    connections_open: int = 0
    published: int = 0
    delivered: int = 0
    errors_sent: int = 0
    oversized_lines: int = 0
    slow_consumer_disconnects: int = 0
    auth_failures: int = 0
    auth_timeouts: int = 0
    auth_throttled: int = 0
    connections_refused: int = 0
    connection_failures: int = 0
    queued_bytes: int = 0  # in every outbox together, now


@attrs.define(eq=False)
class _Sub:
    """One subscription of one connection; identity is what the index keys on."""

    conn: _Conn
    sub_id: str
    subject: str
    queue_group: str | None
    tail: bytes  # the end of every msg frame to this sub: ``,"sub_id":...}\n``


@attrs.define(eq=False)
class _Conn:
    """One client connection: its outbox, subscriptions and owned namespaces."""

    peer: str
    outbox: MemoryObjectSendStream[bytes]
    authed: bool
    subs: dict[str, _Sub] = attrs.field(factory=dict)
    queued_bytes: int = 0
    scope: anyio.CancelScope | None = None
    closing: bool = False  # stop reading, flush the outbox, close
    kill_reason: str | None = None  # set when dropped at once (slow consumer)
    host: str = "?"  # the peer's address, for the auth throttle
    #: Writes to the socket at once (sendnow.py) while the writer is idle and the outbox
    #: empty; None for streams without one and once the outbox is closed.
    direct: DirectWriter | None = None
    writer_busy: bool = True  # a line was handed to the writer and it has not come back yet
    gate: DirectGate = attrs.field(factory=DirectGate)  # when a line may go directly


@attrs.define
class _Namespace:
    owner: _Conn
    transport: Any
    started_at: str
    signal_count: int = 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DevSynapseServer:
    """The dev bus; ``async with DevSynapseServer() as srv:`` serves on ``srv.url``.

    ``port=0`` (the default) asks the OS for a free port; the CLI binds 7070.
    ``on_publish(subject, frame)`` (optional, sync, must be quick) sees every
    accepted ``pub`` before fan-out; ``cosmo synapse start --tail`` uses it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        max_line: int = DEFAULT_MAX_LINE,
        outbox_size: int = DEFAULT_OUTBOX_SIZE,
        outbox_bytes: int = DEFAULT_OUTBOX_BYTES,
        on_publish: Callable[[str, Any], None] | None = None,
        limits: DevBusLimits = DEFAULT_LIMITS,
    ) -> None:
        if max_line < 1 or outbox_size < 1 or outbox_bytes < 1:
            raise ValueError("max_line, outbox_size and outbox_bytes must be >= 1")
        if token == "":
            raise ValueError("token must not be empty (pass None for no token)")
        self.limits = limits
        self._auth_throttle = AuthThrottle(limits.auth_attempts_burst, limits.auth_attempts_per_s)
        self._max_conns = limits.max_connections
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.token = token
        self.max_line = max_line
        self.outbox_size = outbox_size
        self.outbox_bytes = outbox_bytes
        self.on_publish = on_publish
        self.stats: ServerStats = ServerStats()
        self._index: SubscriptionIndex[_Sub] = SubscriptionIndex()
        self._good_subjects: set[str] = set()  # subjects already checked, so a pub checks once
        self._conns: set[_Conn] = set()
        self._namespaces: dict[str, _Namespace] = {}
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None

    # -- addresses -----------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``cosmo://host:port`` (the token, if any, is not part of it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"cosmo://{host}:{self.port}"

    @property
    def namespaces(self) -> dict[str, str]:
        """Registered namespaces and their transports."""
        return {name: ns.transport for name, ns in self._namespaces.items()}

    # -- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start accepting; every task lives in the server's task group."""
        if self._tg is not None:
            return
        if self.token is None and not _is_loopback(self.host):
            log.warning(
                "dev bus bound to %s without a token: anyone who can reach it can read and "
                "publish every Signal (pass a token)",
                self.host,
            )
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self._requested_port)
            stack.push_async_callback(listener.aclose)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._port = listener.extra(SocketAttribute.local_port)
            self._stack = stack
            self._max_conns = self.limits.connection_cap()
            if self._max_conns < self.limits.max_connections:
                log.info("dev bus: connection cap lowered to %d by the descriptor limit", self._max_conns)
            for one in listener.listeners:  # TCP listeners: each is a SocketListener
                self._tg.start_soon(
                    self._accept_loop, cast(SocketListener, one), self._tg, name="dev-bus-accept"
                )
        except BaseException:
            self._tg = None
            await stack.aclose()
            raise
        refresh()  # OpenTelemetry: count slow consumers if the process configured a MeterProvider
        log.info("dev bus listening on %s", self.url)

    async def aclose(self) -> None:
        """Close every connection and the listener; idempotent."""
        stack, tg = self._stack, self._tg
        if stack is None or tg is None:
            return
        self._stack = self._tg = None
        tg.cancel_scope.cancel()
        await stack.aclose()
        log.info("dev bus on port %s stopped", self._port)

    async def serve(self, *, task_status: TaskStatus[DevSynapseServer] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled: ``srv = await tg.start(DevSynapseServer().serve)``.

        Use this to stop a server independently of clients opened after it in the
        same task (task groups must close in reverse order of opening).
        """
        async with self:
            task_status.started(self)
            await anyio.sleep_forever()

    async def __aenter__(self) -> DevSynapseServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        """Accept forever; a failed accept (e.g. out of file descriptors) is logged, not fatal."""
        while True:
            try:
                stream = await accept(listener)  # our asyncio stream on asyncio (aiostream.py)
            except OSError as exc:
                log.error("dev bus: accept failed: %s", exc)
                await anyio.sleep(0.1)  # allowed: back off while the process is out of descriptors
                continue
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the listener is closing
            if len(self._conns) >= self._max_conns:
                await self._refuse_over_cap(stream)
                continue
            tg.start_soon(self._serve_conn, stream, name="dev-bus-connection")

    async def _refuse_over_cap(self, stream: SocketStream) -> None:
        """Over ``max_connections``: a short ``err`` (never waited for long) and close."""
        self.stats.connections_refused += 1
        if self.stats.connections_refused % 100 == 1:
            log.warning(
                "dev bus: connection refused: %d open, the cap is %d", len(self._conns), self._max_conns
            )
        with anyio.CancelScope(shield=True), anyio.move_on_after(_REFUSE_TIMEOUT):
            try:
                await stream.send(_err(f"too many connections (the cap is {self._max_conns})"))
            except _CONN_ERRORS:
                pass
        await anyio.aclose_forcefully(stream)

    # -- one connection --------------------------------------------------------
    async def _serve_conn(self, stream: SocketStream) -> None:
        """Serve one connection; whatever happens stays here (it never fails the server)."""
        try:
            await self._serve_conn_inner(stream)
        except Exception:
            self.stats.connection_failures += 1
            log.exception("dev bus: a connection failed")

    async def _serve_conn_inner(self, stream: SocketStream) -> None:
        try:
            host, port = stream.extra(SocketAttribute.remote_address)[:2]
            peer = f"{host}:{port}"
        except Exception:
            host, peer = "?", "?"
        send, receive = anyio.create_memory_object_stream[bytes](self.outbox_size)
        conn = _Conn(peer=peer, outbox=send, authed=self.token is None, host=str(host))
        conn.direct = direct_writer(stream)
        self._conns.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        log.debug("dev bus: %s connected", peer)
        try:
            with anyio.CancelScope() as scope:
                conn.scope = scope
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._write_loop, conn, stream, receive, name="dev-bus-writer")
                    self._push(conn, _WELCOME)
                    await self._read_loop(conn, stream)
                    # Peer finished sending (or was refused): flush what is queued, bounded.
                    conn.direct = None
                    send.close()
                    scope.deadline = anyio.current_time() + _FLUSH_TIMEOUT
        except Exception:
            self.stats.connection_failures += 1
            log.exception("dev bus: connection %s failed", peer)
        finally:
            self._forget(conn)
            conn.direct = None
            send.close()
            self.stats.connections_open -= 1  # before the peer can see the close
            with anyio.CancelScope(shield=True):
                await self._hang_up(conn, stream)
            log.debug("dev bus: %s disconnected", peer)

    async def _hang_up(self, conn: _Conn, stream: SocketStream) -> None:
        """Best-effort goodbye (``err`` with the reason) and close; a dead peer is fine."""
        if conn.kill_reason is not None:
            with anyio.move_on_after(_GOODBYE_TIMEOUT):
                try:
                    await stream.send(_err(conn.kill_reason))
                except _CONN_ERRORS:
                    pass  # reset, or already closed: the peer is gone
        try:
            await stream.aclose()
        except _CONN_ERRORS:
            await anyio.aclose_forcefully(stream)

    def _forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        self.stats.queued_bytes -= conn.queued_bytes  # freed with its outbox
        conn.queued_bytes = 0
        for sub in conn.subs.values():
            self._index.remove(sub.subject, sub)
        conn.subs.clear()
        for name in [n for n, ns in self._namespaces.items() if ns.owner is conn]:
            del self._namespaces[name]
            log.debug("dev bus: namespace %r removed (owner disconnected)", name)

    def _push(self, conn: _Conn, data: bytes) -> None:
        """Queue *data* for *conn* without waiting; overflow disconnects *conn*.

        Over the budget of all outboxes together, the connection holding the most
        is dropped first (it may be *conn*).
        """
        if conn.kill_reason is not None:
            return
        size = len(data)
        if conn.queued_bytes and conn.queued_bytes + size > self.outbox_bytes:
            self._overflow(conn)
            return
        if self.stats.queued_bytes + size > self.limits.max_outbox_total:
            hog = max(self._conns, key=lambda c: c.queued_bytes, default=conn)
            self._overflow(hog, "the outboxes of all connections are over their budget")
            if hog is conn or conn.kill_reason is not None:
                return
        # Straight to the socket when idle; a busy connection leaves it to the writer (sendnow.py).
        # writer_busy covers the outbox: every line reaches it below, which sets the flag.
        if not conn.writer_busy and conn.direct is not None and conn.gate.open():
            taken = conn.direct(data)
            if taken == size:
                return
            data = data[taken:]  # the rest goes first, through the writer
            size = len(data)
        try:
            conn.outbox.send_nowait(data)
        except anyio.WouldBlock:
            self._overflow(conn)
            return
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        conn.writer_busy = True  # what comes next must queue behind it
        conn.gate.queued()
        conn.queued_bytes += size
        self.stats.queued_bytes += size

    def _overflow(self, conn: _Conn, why: str = "outbox overflow") -> None:
        """Drop a slow consumer at once; it is sent an ``err`` on the way out (best effort)."""
        if conn.kill_reason is not None:
            return
        self.stats.slow_consumer_disconnects += 1
        bus_event("slow_consumer")
        log.warning(
            "dev bus: disconnecting slow consumer %s: %s (%d bytes queued, outbox limits %d messages / "
            "%d bytes, %d bytes for all)",
            conn.peer,
            why,
            conn.queued_bytes,
            self.outbox_size,
            self.outbox_bytes,
            self.limits.max_outbox_total,
        )
        conn.kill_reason = f"slow consumer: {why}, disconnecting"
        self.stats.queued_bytes -= conn.queued_bytes  # its outbox is dropped with it
        conn.queued_bytes = 0
        conn.direct = None
        conn.outbox.close()
        if conn.scope is not None:
            conn.scope.cancel()

    async def _write_loop(
        self, conn: _Conn, stream: SocketStream, receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        """Drain the outbox into the socket, coalescing what is already queued."""
        try:
            async with receive:
                while True:
                    conn.writer_busy = False
                    batch, size = await receive_batch(receive, len, _BATCH_BYTES)
                    conn.writer_busy = True
                    if conn.kill_reason is None:  # else its bytes were written off at once
                        conn.queued_bytes -= size
                        self.stats.queued_bytes -= size
                    await stream.send(batch[0] if len(batch) == 1 else b"".join(batch))
                    conn.gate.last_write = time.monotonic()
        except anyio.EndOfStream:
            return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            if conn.scope is not None:
                conn.scope.cancel()  # the peer is gone; stop reading too

    async def _read_loop(self, conn: _Conn, stream: SocketStream) -> None:
        if conn.authed:
            reader = LineReader(stream, self.max_line)
        else:
            # Before auth: short lines, and not for long.
            reader = LineReader(stream, min(self.max_line, self.limits.max_line_before_auth))
            with anyio.move_on_after(self.limits.auth_timeout):
                await self._read_lines(conn, reader, until_authed=True)
            if not conn.authed:
                if not conn.closing:
                    self.stats.auth_timeouts += 1
                    self._refuse(conn, f"auth timeout: no auth within {self.limits.auth_timeout:g}s")
                return
            reader.max_line = self.max_line
        # asyncio: most lines are handled in the read callback while this task waits.
        with inline_reading(stream, functools.partial(self._read_inline, conn, reader)):
            await self._read_lines(conn, reader, until_authed=False)

    async def _read_lines(self, conn: _Conn, reader: LineReader, *, until_authed: bool) -> None:
        while not conn.closing and not (until_authed and conn.authed):
            try:
                line = await reader.receive_line()
            except LineTooLong as exc:
                self._line_too_long(conn, exc)
                continue
            except (*_CONN_ERRORS, _ReadingOver):
                conn.closing = True
                return
            self._on_line(conn, line)

    def _read_inline(self, conn: _Conn, reader: LineReader, take: Callable[[int], bytes]) -> None:
        """Handle the lines that arrived, in the transport's read callback (``aiostream``):
        the connection's reader task is not woken for them.  Once the connection is
        closing, ``_ReadingOver`` ends that task's wait."""
        while data := take(READ_CHUNK):
            reader.feed(data)
        while not conn.closing:
            try:
                line = reader.next_line()
            except LineTooLong as exc:
                self._line_too_long(conn, exc)
                continue
            if line is None:
                return
            self._on_line(conn, line)
        raise _ReadingOver

    def _line_too_long(self, conn: _Conn, exc: LineTooLong) -> None:
        self.stats.oversized_lines += 1
        self._reject_line(conn, f"line too long: over {exc.limit} bytes, skipped")

    def _on_line(self, conn: _Conn, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self._reject_line(conn, f"bad JSON: {exc}")
            return
        if not isinstance(msg, dict):
            self._reject_line(conn, f"bad message: expected a JSON object, got {type(msg).__name__}")
        elif conn.authed:
            try:
                self._handle(conn, msg)
            except Exception as exc:  # a bug must not end the connection (or the server)
                log.exception("dev bus: op %r from %s failed", msg.get("op"), conn.peer)
                self._send_err(conn, f"internal error in op {str(msg.get('op'))[:50]!r}: {exc!r}"[:500])
        elif msg.get("op") == "auth":
            self._check_token(conn, msg)
        else:
            self._refuse(conn, 'auth required: send {"op":"auth","token":...} first')

    # -- ops -------------------------------------------------------------------
    def _send_err(self, conn: _Conn, message: str) -> None:
        self.stats.errors_sent += 1
        self._push(conn, _err(message))

    def _reject_line(self, conn: _Conn, message: str) -> None:
        """A line that is not a message: ``err`` and go on (before auth: close)."""
        if conn.authed:
            self._send_err(conn, message)
        else:
            self._refuse(conn, f"auth required; {message}")

    def _refuse(self, conn: _Conn, message: str) -> None:
        """Answer ``err`` and close once the outbox is flushed."""
        self.stats.auth_failures += 1
        log.warning("dev bus: refused %s: %s", conn.peer, message)
        self._send_err(conn, message)
        conn.closing = True

    def _check_token(self, conn: _Conn, msg: dict[str, Any]) -> None:
        if not self._auth_throttle.allowed(conn.host):
            # Over its failure budget: refused without looking, so guessing gains nothing.
            self.stats.auth_throttled += 1
            self._refuse(conn, f"auth: too many failed attempts from {conn.host}; try again later")
            return
        given = msg.get("token")
        expected = self.token
        if (
            expected is not None
            and isinstance(given, str)
            and hmac.compare_digest(given.encode(), expected.encode())
        ):
            conn.authed = True
            self._push(conn, _AUTH_OK)
        else:
            self._auth_throttle.failed(conn.host)
            self._refuse(conn, "auth: bad token")

    def _handle(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "pub":
            self._op_pub(conn, msg)
        elif op == "sub":
            self._op_sub(conn, msg)
        elif op == "unsub":
            sub_id = msg.get("sub_id")
            sub = conn.subs.pop(sub_id, None) if isinstance(sub_id, str) else None
            if sub is not None:
                self._index.remove(sub.subject, sub)
        elif op == "ping":
            self._push(conn, _PONG)
        elif op == "hello":
            self._push(conn, _WELCOME)
        elif op == "ns_register":
            self._op_ns_register(conn, msg)
        elif op == "mgmt_list":
            self._op_mgmt_list(conn)
        elif op == "mgmt_info":
            self._op_mgmt_info(conn, msg)
        elif op == "mgmt_stop":
            self._op_mgmt_stop(conn, msg)
        elif op == "auth" and self.token is not None:
            self._check_token(conn, msg)
        else:
            self._send_err(conn, f"unknown op {op!r}")

    def _op_pub(self, conn: _Conn, msg: dict[str, Any]) -> None:
        subject = msg.get("subject")
        frame = msg.get("frame")
        if not subject or frame is None:
            self._send_err(conn, "pub: missing subject/frame")
            return
        if not isinstance(subject, str):
            self._send_err(conn, "pub: subject must be a string")
            return
        if subject not in self._good_subjects:
            problem = subject_error(subject, publish=True)
            if problem is not None:
                self._send_err(conn, f"pub: {problem}")
                return
            if len(self._good_subjects) >= _SUBJECT_CACHE:
                self._good_subjects.clear()
            self._good_subjects.add(subject)
        if isinstance(frame, str):
            encoded = orjson.dumps(frame)
        else:
            try:  # forwarded as-is (§17.4); too deep to encode is refused, not a dead connection
                encoded = orjson.dumps(frame)
            except TypeError as exc:
                self._send_err(conn, f"pub: frame cannot be forwarded: {exc}")
                return
        self.stats.published += 1
        if subject.startswith("cosmonapse."):
            parts = subject.split(".", 2)
            ns = self._namespaces.get(parts[1]) if len(parts) > 1 else None
            if ns is not None:
                ns.signal_count += 1
        if self.on_publish is not None:
            try:
                self.on_publish(subject, frame)
            except Exception:
                log.exception("dev bus: on_publish hook raised")
        targets = self._index.targets(subject)
        if not targets:
            return
        # Encode the frame once; each copy only differs in its sub_id tail.
        head = b'{"op":"msg","subject":' + orjson.dumps(subject) + b',"frame":' + encoded
        for sub in targets:
            self._push(sub.conn, head + sub.tail)
        self.stats.delivered += len(targets)

    def _op_sub(self, conn: _Conn, msg: dict[str, Any]) -> None:
        sub_id = msg.get("sub_id")
        subject = msg.get("subject")
        group = msg.get("queue_group")
        if not sub_id or not subject:
            self._send_err(conn, "sub: missing sub_id/subject")
            return
        if not isinstance(sub_id, str) or not isinstance(subject, str):
            self._send_err(conn, "sub: sub_id and subject must be strings")
            return
        if group is not None and not isinstance(group, str):
            self._send_err(conn, "sub: queue_group must be a string or null")
            return
        problem = subject_error(subject, publish=False)
        if problem is not None:
            self._send_err(conn, f"sub: {problem}")
            return
        old = conn.subs.get(sub_id)
        if old is not None:
            self._index.remove(old.subject, old)
        tail = b',"sub_id":' + orjson.dumps(sub_id) + b"}\n"
        sub = _Sub(conn=conn, sub_id=sub_id, subject=subject, queue_group=group, tail=tail)
        conn.subs[sub_id] = sub
        self._index.add(subject, sub, group)

    def _op_ns_register(self, conn: _Conn, msg: dict[str, Any]) -> None:
        name = msg.get("namespace")
        if not name:
            self._send_err(conn, "ns_register: missing namespace")
            return
        if not isinstance(name, str):
            self._send_err(conn, "ns_register: namespace must be a string")
            return
        transport = msg.get("transport", "memory")
        if not isinstance(transport, str):
            self._send_err(conn, "ns_register: transport must be a string")
            return
        current = self._namespaces.get(name)
        if current is not None and current.owner is not conn:
            # Ours until our connection ends: a foreign client cannot take over (and then
            # swallow the ns_stopping meant for the `cosmo synapse start` that owns it).
            self._send_err(conn, f"ns_register: namespace {name!r} is registered by another connection")
            return
        self._namespaces[name] = _Namespace(
            owner=conn,
            transport=transport,
            started_at=current.started_at if current is not None else datetime.now(UTC).isoformat(),
            signal_count=current.signal_count if current is not None else 0,
        )
        log.debug("dev bus: namespace %r registered by %s", name, conn.peer)
        self._push(conn, encode_line({"op": "ns_registered", "namespace": name}))

    def _op_mgmt_list(self, conn: _Conn) -> None:
        listing = [
            {
                "namespace": name,
                "transport": ns.transport,
                "started_at": ns.started_at,
                "signal_count": ns.signal_count,
            }
            for name, ns in self._namespaces.items()
        ]
        self._push(conn, encode_line({"op": "mgmt_ns_list", "namespaces": listing}))

    def _lookup(self, conn: _Conn, msg: dict[str, Any]) -> tuple[Any, _Namespace | None]:
        name = msg.get("namespace")
        ns = self._namespaces.get(name) if isinstance(name, str) else None
        if ns is None:
            self._send_err(conn, f"namespace {name!r} not found")
        return name, ns

    def _op_mgmt_info(self, conn: _Conn, msg: dict[str, Any]) -> None:
        name, ns = self._lookup(conn, msg)
        if ns is None:
            return
        info = {
            "op": "mgmt_ns_info",
            "namespace": name,
            "transport": ns.transport,
            "started_at": ns.started_at,
            "signal_count": ns.signal_count,
            "client_count": len(self._conns),
        }
        self._push(conn, encode_line(info))

    def _op_mgmt_stop(self, conn: _Conn, msg: dict[str, Any]) -> None:
        name, ns = self._lookup(conn, msg)
        if ns is None:
            return
        del self._namespaces[name]
        self._push(ns.owner, encode_line({"op": "ns_stopping", "namespace": name}))
        self._push(conn, encode_line({"op": "mgmt_stop_ack", "namespace": name}))
        log.info("dev bus: namespace %r stopped by %s", name, conn.peer)
