"""The NATS core text protocol: an incremental parser and the frame encoders.

Kept apart from the adapter so it can be tested byte by byte and has no I/O:
``Parser.feed`` takes whatever a socket read returned (half a control line,
three MSGs and the first half of a fourth payload, ...) and returns the
complete operations it now holds.  Only the operations a core client needs are
understood: INFO, MSG, HMSG (a message with headers), PING, PONG, +OK, -ERR.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

__all__ = [
    "CRLF",
    "MAX_CONTROL_LINE",
    "OK",
    "PING",
    "PING_FRAME",
    "PONG",
    "PONG_FRAME",
    "Err",
    "Event",
    "HMsg",
    "Info",
    "Msg",
    "Parser",
    "ProtocolError",
    "check_publish_subject",
    "check_queue_group",
    "check_subscribe_subject",
    "encode_connect",
    "encode_headers",
    "encode_hpub_head",
    "encode_pub_head",
    "encode_sub",
    "encode_unsub",
    "parse_headers",
]

CRLF = b"\r\n"
PING_FRAME = b"PING\r\n"
PONG_FRAME = b"PONG\r\n"

#: Longest control line we accept before calling the peer broken.  The server's
#: own limit for what it sends is far lower; this only bounds a garbage stream.
MAX_CONTROL_LINE = 64 * 1024
#: Largest MSG payload we accept; the server's max_payload tops out at 64 MiB.
MAX_MSG_PAYLOAD = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The server sent something that is not the NATS protocol; the connection is unusable."""


class Msg(NamedTuple):
    """``MSG <subject> <sid> [reply-to] <#bytes>`` and its payload."""

    subject: str
    sid: int
    reply: str | None
    payload: bytes


class HMsg(NamedTuple):
    """``HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>``: headers, then payload."""

    subject: str
    sid: int
    reply: str | None
    headers: bytes
    payload: bytes


class Info(NamedTuple):
    """``INFO {json}``: server facts (max_payload, connect_urls, auth_required, ...)."""

    data: dict[str, Any]


class Err(NamedTuple):
    """``-ERR '<message>'``."""

    message: str


class _Token(NamedTuple):
    name: str


PING = _Token("PING")
PONG = _Token("PONG")
OK = _Token("+OK")

Event = Msg | HMsg | Info | Err | _Token

#: The first line of a header block (``NATS/1.0``, optionally followed by a status).
HEADER_VERSION = b"NATS/1.0"


class Parser:
    """Turns a byte stream from a NATS server into protocol events, across any read boundaries."""

    __slots__ = ("_buf", "_msg")

    def __init__(self) -> None:
        self._buf = bytearray()
        # A MSG whose control line is parsed but whose payload has not all arrived:
        # (subject, sid, reply, total bytes, header bytes or -1 for a plain MSG).
        self._msg: tuple[str, int, str | None, int, int] | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Add *data*; return every operation now complete (raises ProtocolError on garbage)."""
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                pending = self._msg
                if pending is not None:
                    end = pos + pending[3]
                    if size < end + 2:
                        break
                    if buf[end : end + 2] != CRLF:
                        raise ProtocolError("MSG payload not followed by CRLF")
                    split = pending[4]
                    if split < 0:
                        events.append(Msg(pending[0], pending[1], pending[2], bytes(buf[pos:end])))
                    else:
                        head, body = bytes(buf[pos : pos + split]), bytes(buf[pos + split : end])
                        events.append(HMsg(pending[0], pending[1], pending[2], head, body))
                    self._msg = None
                    pos = end + 2
                    continue
                eol = buf.find(CRLF, pos)
                if eol < 0:
                    if size - pos > MAX_CONTROL_LINE:
                        raise ProtocolError(f"control line longer than {MAX_CONTROL_LINE} bytes")
                    break
                line = bytes(buf[pos:eol])
                pos = eol + 2
                event = self._control(line)
                if event is not None:
                    events.append(event)
        finally:
            del buf[:pos]
        return events

    def _control(self, line: bytes) -> Event | None:
        op = line[:4].upper()
        if op == b"MSG ":
            self._msg = _parse_msg_line(line)
            return None
        if op == b"HMSG":
            self._msg = _parse_hmsg_line(line)
            return None
        if op == b"PING":
            return PING
        if op == b"PONG":
            return PONG
        if op == b"INFO":
            try:
                data = orjson.loads(line[4:].strip() or b"{}")
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"INFO is not JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise ProtocolError("INFO is not a JSON object")
            return Info(data)
        if op == b"+OK":
            return OK
        if op == b"-ERR":
            text = line[4:].strip().decode("utf-8", "replace")
            if len(text) >= 2 and text[0] == text[-1] == "'":
                text = text[1:-1]
            return Err(text)
        if not line.strip():
            return None
        raise ProtocolError(f"unknown operation {line[:40]!r}")


def _parse_msg_line(line: bytes) -> tuple[str, int, str | None, int, int]:
    parts = line.split()
    if len(parts) == 4:
        _, subject, sid, size = parts
        reply = None
    elif len(parts) == 5:
        _, subject, sid, reply_b, size = parts
        reply = reply_b.decode("utf-8", "surrogateescape")
    else:
        raise ProtocolError(f"malformed MSG line {line[:200]!r}")
    try:
        nbytes = int(size)
        sid_n = int(sid)
    except ValueError as exc:
        raise ProtocolError(f"malformed MSG line {line[:200]!r}") from exc
    if not 0 <= nbytes <= MAX_MSG_PAYLOAD:
        raise ProtocolError(f"MSG payload size out of range: {nbytes}")
    return subject.decode("utf-8", "surrogateescape"), sid_n, reply, nbytes, -1


def _parse_hmsg_line(line: bytes) -> tuple[str, int, str | None, int, int]:
    parts = line.split()
    if len(parts) == 5:
        _, subject, sid, hsize, size = parts
        reply = None
    elif len(parts) == 6:
        _, subject, sid, reply_b, hsize, size = parts
        reply = reply_b.decode("utf-8", "surrogateescape")
    else:
        raise ProtocolError(f"malformed HMSG line {line[:200]!r}")
    try:
        nbytes, hbytes, sid_n = int(size), int(hsize), int(sid)
    except ValueError as exc:
        raise ProtocolError(f"malformed HMSG line {line[:200]!r}") from exc
    if not 0 <= hbytes <= nbytes <= MAX_MSG_PAYLOAD:
        raise ProtocolError(f"HMSG sizes out of range: {hbytes} header bytes of {nbytes}")
    return subject.decode("utf-8", "surrogateescape"), sid_n, reply, nbytes, hbytes


def parse_headers(block: bytes) -> dict[str, str]:
    """A header block (``NATS/1.0[ status]``, CRLF, ``Key: Value`` lines, a blank line) → {key: value}.

    Keys are folded to lower case: clients differ in case (nats.go canonicalises
    ``traceparent`` to ``Traceparent``).  The first value of a repeated key wins;
    lines that are not ``key: value`` are skipped.  The status, if any, is under ``""``.
    """
    lines = block.decode("utf-8", "replace").split("\r\n")
    out: dict[str, str] = {}
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        return out
    status = first[len("NATS/1.0") :].strip()
    if status:
        out[""] = status
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key:
            out.setdefault(key.strip().lower(), value.strip())
    return out


# -- encoders and checks -----------------------------------------------------

_FORBIDDEN = frozenset(" \t\r\n\f\v\0")


def _check_token_text(kind: str, text: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise ValueError(f"NATS {kind} must be a non-empty string, got {text!r}")
    if not _FORBIDDEN.isdisjoint(text):
        raise ValueError(f"NATS {kind} {text!r} contains whitespace or NUL, which the protocol cannot carry")
    return text.encode("utf-8")


def _check_subject(text: str) -> bytes:
    raw = _check_token_text("subject", text)
    if "" in text.split("."):
        raise ValueError(f"NATS subject {text!r} has an empty token (leading, trailing or double '.')")
    return raw


def check_subscribe_subject(subject: str) -> bytes:
    """Validate a subscription pattern (``*`` and a final ``>`` allowed); return it encoded."""
    raw = _check_subject(subject)
    tokens = subject.split(".")
    if ">" in tokens[:-1]:
        raise ValueError(f"NATS subject {subject!r}: '>' may only be the last token")
    return raw


def check_publish_subject(subject: str) -> bytes:
    """Validate a subject to publish on (no wildcard tokens); return it encoded."""
    raw = _check_subject(subject)
    if any(tok in ("*", ">") for tok in subject.split(".")):
        raise ValueError(f"cannot publish to a wildcard subject: {subject!r}")
    return raw


def check_queue_group(queue: str) -> bytes:
    """Validate a queue group name (any text without whitespace, e.g. ``caps:a,b``)."""
    return _check_token_text("queue group", queue)


def encode_connect(options: dict[str, Any]) -> bytes:
    """``CONNECT {json}``."""
    return b"CONNECT " + orjson.dumps(options) + CRLF


def encode_pub_head(subject: bytes, reply: bytes | None = None) -> bytes:
    """The ``PUB <subject> [reply] `` prefix; the caller appends ``<#bytes>\\r\\n<payload>\\r\\n``."""
    if reply is None:
        return b"PUB " + subject + b" "
    return b"PUB " + subject + b" " + reply + b" "


def encode_hpub_head(subject: bytes, reply: bytes | None = None) -> bytes:
    """``HPUB <subject> [reply] ``; the caller appends ``<#hdr> <#total>``, CRLF, headers, payload."""
    if reply is None:
        return b"HPUB " + subject + b" "
    return b"HPUB " + subject + b" " + reply + b" "


def encode_headers(headers: dict[str, str]) -> bytes:
    """A header block for HPUB; a key or value with CR/LF (or a key with ':') is a ValueError."""
    out = bytearray(HEADER_VERSION + CRLF)
    for key, value in headers.items():
        if not key or not _HEADER_KEY_OK.isdisjoint(key) or "\r" in value or "\n" in value:
            raise ValueError(f"NATS header {key!r}: {value!r} cannot be carried (CR, LF or ':' in it)")
        out += f"{key}: {value}\r\n".encode()
    out += CRLF
    return bytes(out)


_HEADER_KEY_OK = frozenset(":\r\n \t")


def encode_sub(subject: bytes, sid: int, queue: bytes | None = None) -> bytes:
    """``SUB <subject> [queue group] <sid>``."""
    if queue is None:
        return b"SUB %s %d\r\n" % (subject, sid)
    return b"SUB %s %s %d\r\n" % (subject, queue, sid)


def encode_unsub(sid: int, max_msgs: int | None = None) -> bytes:
    """``UNSUB <sid> [max_msgs]``."""
    if max_msgs is None:
        return b"UNSUB %d\r\n" % sid
    return b"UNSUB %d %d\r\n" % (sid, max_msgs)
