"""The NATS text-protocol parser and encoders, byte by byte (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmonapse.synapse.nats import parse_servers
from cosmonapse.synapse.nats_protocol import (
    OK,
    PING,
    PONG,
    Err,
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

STREAM = (
    b'INFO {"server_id":"X","max_payload":1048576,"connect_urls":["127.0.0.1:4223"]}\r\n'
    b"PING\r\n"
    b"MSG a.b 1 5\r\nhello\r\n"
    b"MSG a.c 2 _INBOX.r 0\r\n\r\n"
    b"+OK\r\n"
    b"-ERR 'Unknown Protocol Operation'\r\n"
    b"MSG big 3 12\r\nline\r\nbreaks\r\n"
    b"PONG\r\n"
)
EXPECTED = [
    Info({"server_id": "X", "max_payload": 1048576, "connect_urls": ["127.0.0.1:4223"]}),
    PING,
    Msg("a.b", 1, None, b"hello"),
    Msg("a.c", 2, "_INBOX.r", b""),
    OK,
    Err("Unknown Protocol Operation"),
    Msg("big", 3, None, b"line\r\nbreaks"),
    PONG,
]


def test_whole_stream_at_once() -> None:
    assert Parser().feed(STREAM) == EXPECTED


def test_every_split_point_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        parser = Parser()
        events = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert events == EXPECTED, cut


def test_byte_at_a_time() -> None:
    parser = Parser()
    events = []
    for i in range(len(STREAM)):
        events += parser.feed(STREAM[i : i + 1])
    assert events == EXPECTED


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_payloads_survive_arbitrary_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(b"MSG s.%d %d %d\r\n%s\r\n" % (i, i, len(p), p) for i, p in enumerate(payloads))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = Parser()
    events = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events += parser.feed(stream[prev:cut])
        prev = cut
    assert events == [Msg(f"s.{i}", i, None, p) for i, p in enumerate(payloads)]


def test_large_payload_in_many_reads() -> None:
    body = bytes(range(256)) * 4000  # ~1 MB, every byte value
    stream = b"MSG x 7 %d\r\n%s\r\nPING\r\n" % (len(body), body)
    parser = Parser()
    events = []
    for i in range(0, len(stream), 65536):
        events += parser.feed(stream[i : i + 65536])
    assert events == [Msg("x", 7, None, body), PING]


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO world\r\n",
        b"MSG a 1\r\n",
        b"MSG a x 3\r\nabc\r\n",
        b"MSG a 1 -3\r\n",
        b"MSG a 1 3\r\nabcXY",
        b"INFO {not json}\r\n",
        b"INFO [1]\r\n",
    ],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(garbage)


def test_endless_control_line_is_bounded() -> None:
    parser = Parser()
    with pytest.raises(ProtocolError, match="control line"):
        for _ in range(100):
            parser.feed(b"x" * 1024)


def test_encoders() -> None:
    assert encode_connect({"verbose": False}) == b'CONNECT {"verbose":false}\r\n'
    assert encode_pub_head(b"a.b") == b"PUB a.b "
    assert encode_pub_head(b"a.b", b"_INBOX.1") == b"PUB a.b _INBOX.1 "
    assert encode_sub(b"a.*", 3) == b"SUB a.* 3\r\n"
    assert encode_sub(b"x.TASK.routed", 4, b"caps:a,b") == b"SUB x.TASK.routed caps:a,b 4\r\n"
    assert encode_unsub(3) == b"UNSUB 3\r\n"
    assert encode_unsub(3, 1) == b"UNSUB 3 1\r\n"


@pytest.mark.parametrize("subject", ["", "a b", "a\tb", "a\r\nPUB x 1", "a..b", ".a", "a.", "a.>.b"])
def test_bad_subscribe_subjects(subject: str) -> None:
    with pytest.raises(ValueError):
        check_subscribe_subject(subject)


def test_subject_checks() -> None:
    assert check_subscribe_subject("cosmonapse.ns.>") == b"cosmonapse.ns.>"
    assert check_subscribe_subject("a.*.c") == b"a.*.c"
    assert check_publish_subject("cosmonapse.ns.TASK.routed") == b"cosmonapse.ns.TASK.routed"
    assert check_publish_subject("héllo.wörld") == "héllo.wörld".encode()
    for bad in ("a.*", "a.>", "a b"):
        with pytest.raises(ValueError):
            check_publish_subject(bad)
    assert check_queue_group("caps:english,summarize") == b"caps:english,summarize"
    with pytest.raises(ValueError):
        check_queue_group("caps:a b")


def test_parse_servers() -> None:
    pool = parse_servers("nats://h1:4001, h2:4002,nats://u:p@h3,nats://tok@h4:9")
    assert [(s.host, s.port) for s in pool] == [("h1", 4001), ("h2", 4002), ("h3", 4222), ("h4", 9)]
    assert (pool[2].user, pool[2].password, pool[2].token) == ("u", "p", None)
    assert (pool[3].user, pool[3].token) == (None, "tok")
    assert [str(s) for s in parse_servers(["nats://[::1]:4222", "nats://[::1]:4222"])] == [
        "nats://[::1]:4222"
    ]
    (tls,) = parse_servers("tls://h:4222")
    assert tls.tls and str(tls) == "tls://h:4222"
    with pytest.raises(ValueError, match="nats:// and tls://"):
        parse_servers("ws://h:4222")
    with pytest.raises(ValueError, match="no NATS server"):
        parse_servers(" , ")
