"""The pieces of Prism that need no network: the guard, the page feed, URL handling."""

from __future__ import annotations

import importlib.util

import anyio
import pytest

from cosmonapse.prism import MissingExtraError, require_extra
from cosmonapse.prism.fanout import PageFeed, encode_batch
from cosmonapse.prism.guard import Guard, is_loopback, new_token
from cosmonapse.prism.server import page_url, redact_url

TOKEN = "t" * 43


def test_token_is_random_and_compared_exactly() -> None:
    assert len({new_token() for _ in range(100)}) == 100 and len(new_token()) >= 43
    guard = Guard(TOKEN, 7071)
    assert guard.token_ok(TOKEN)
    assert not guard.token_ok(None) and not guard.token_ok("") and not guard.token_ok(TOKEN[:-1])
    assert not guard.token_ok(TOKEN + "x") and not guard.token_ok("é" * 43)
    with pytest.raises(ValueError):
        Guard("short", 7071)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:7071", True), ("localhost:7071", True), ("[::1]:7071", True), ("LOCALHOST:7071", True),
        ("127.0.0.1:7072", False), ("127.0.0.1", False), ("evil.example:7071", False),
        ("127.0.0.1.evil.example:7071", False), ("user@127.0.0.1:7071", False), ("", False), (None, False),
        ("127.0.0.1:7071/x", False), ("127.0.0.1:notaport", False),
    ],
)  # fmt: skip
def test_host_check(host: str | None, ok: bool) -> None:
    assert Guard(TOKEN, 7071).host_ok(host) is ok


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("http://127.0.0.1:7071", True), ("http://localhost:7071", True), ("http://[::1]:7071", True),
        ("https://127.0.0.1:7071", False), ("http://127.0.0.1:7072", False), ("http://evil.example", False),
        ("null", False), (None, False), ("", False), ("http://127.0.0.1:7071/x", False),
        ("file://", False), ("http://127.0.0.1:bad", False),
    ],
)  # fmt: skip
def test_origin_check(origin: str | None, ok: bool) -> None:
    assert Guard(TOKEN, 7071).origin_ok(origin) is ok


def test_allowed_hosts_extend_the_loopback_names() -> None:
    guard = Guard(TOKEN, 80, ["prism.lan"])
    assert guard.host_ok("prism.lan") and guard.origin_ok("http://prism.lan")
    assert is_loopback("127.3.2.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_urls_never_show_secrets() -> None:
    assert redact_url("cosmo://127.0.0.1:7070?token=secret") == "cosmo://127.0.0.1:7070"
    assert redact_url("nats://u:p@a:4222,b:4223") == "nats://a:4222,b:4223"
    assert page_url("0.0.0.0", 7071, TOKEN) == f"http://127.0.0.1:7071/?token={TOKEN}"
    assert page_url("::1", 7071, TOKEN).startswith("http://[::1]:7071/")


@pytest.mark.anyio
async def test_page_feed_drops_the_oldest_counts_them_and_batches() -> None:
    feed = PageFeed(limit=3)
    for i in range(5):
        feed.put(b'{"n":%d}' % i)
    frames, dropped = await feed.take(0)
    assert frames == [b'{"n":2}', b'{"n":3}', b'{"n":4}'] and dropped == 2
    assert encode_batch(frames, dropped) == '{"kind":"batch","dropped":2,"signals":[{"n":2},{"n":3},{"n":4}]}'
    feed.put(b"1")
    feed.close()
    feed.put(b"2")  # after close: ignored
    assert await feed.take(0) == ([b"1"], 0)
    with pytest.raises(anyio.EndOfStream):
        await feed.take(0)


@pytest.mark.anyio
async def test_page_feed_take_waits_for_a_frame_and_caps_a_batch() -> None:
    feed = PageFeed(limit=100)
    frames: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_put_later, feed)
        with anyio.fail_after(5):
            frames, _ = await feed.take(0)
    assert frames == [b"late"]
    for i in range(10):
        feed.put(b"%d" % i)
    first, _ = await feed.take(0, max_batch=4)
    assert len(first) == 4 and len(feed) == 6


async def _put_later(feed: PageFeed) -> None:
    await anyio.lowlevel.checkpoint()
    feed.put(b"late")


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "hypercorn" else real(name)
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'cosmonapse\[prism\]' \(missing: hypercorn\)"):
        require_extra()
