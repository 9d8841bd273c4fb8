"""The bus tap: one subscription for the whole namespace, fanned out to every open page.

Flow: the synapse's pump calls ``BusTap._on_signal`` for each Signal of
``cosmonapse.<ns>.>`` (TASKs and ``TASK.routed`` included).  The handler never waits: it
encodes the Signal once, keeps it in a bounded history ring and appends it to the
``PageFeed`` of each page.  Each page's sender task takes what has gathered every
``interval`` seconds and sends it as one message, so 10,000 Signals/s become ~20
messages/s per page.

Buffers (both bounded, both written down):

* history — the last ``history`` frames, replayed to a page when it opens; oldest dropped.
* ``PageFeed`` — frames not yet sent to one page, at most ``limit``; when a page (or its
  network) falls behind, the *oldest* frames are dropped and counted, and the count goes
  to the page with the next batch, so it can say so.  The bus never waits for a browser.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

from ..codec import encode_signal
from ..signal import Signal, SignalType
from ..subjects import namespace_wildcard, subject_for
from ..synapse.base import Subscription, Synapse

__all__ = ["DEFAULT_HISTORY", "DEFAULT_PAGE_LIMIT", "BusTap", "PageFeed", "encode_batch"]

#: Frames replayed to a page that opens late.
DEFAULT_HISTORY = 2000
#: Frames queued for one page before the oldest are dropped.
DEFAULT_PAGE_LIMIT = 50_000
#: Most frames in one message to a page.
MAX_BATCH = 5000


def encode_batch(frames: list[bytes], dropped: int) -> str:
    """One data-channel message: ``{"kind":"batch","dropped":N,"signals":[...]}``."""
    head = b'{"kind":"batch","dropped":%d,"signals":[' % dropped
    return (head + b",".join(frames) + b"]}").decode()


class PageFeed:
    """Frames waiting for one page; bounded, drops the oldest (counted) when full."""

    def __init__(self, limit: int = DEFAULT_PAGE_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.dropped: int = 0
        self.closed = False
        self._frames: deque[bytes] = deque()
        self._ready = anyio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: bytes) -> None:
        """Queue *frame* (never waits)."""
        if self.closed:
            return
        frames = self._frames
        if len(frames) >= self.limit:
            frames.popleft()
            self.dropped += 1
        frames.append(frame)
        self._ready.set()

    def close(self) -> None:
        """No more frames: ``take`` returns what is left, then raises ``EndOfStream``."""
        self.closed: bool = True
        self._ready.set()

    async def take(self, interval: float, max_batch: int = MAX_BATCH) -> tuple[list[bytes], int]:
        """Wait for frames, let more gather for *interval* seconds, return (frames, dropped since last)."""
        while not self._frames:
            if self.closed:
                raise anyio.EndOfStream
            await self._ready.wait()
            self._ready = anyio.Event()
        if interval > 0 and not self.closed and len(self._frames) < max_batch:
            await anyio.sleep(interval)  # allowed: the batching interval paces the page, not a sync
        frames = self._frames
        count = min(len(frames), max_batch)
        batch = [frames.popleft() for _ in range(count)]
        dropped, self.dropped = self.dropped, 0
        return batch, dropped


class BusTap:
    """Reads one namespace through the public Synapse API and feeds every page."""

    def __init__(
        self,
        synapse: Synapse,
        namespace: str,
        *,
        history: int = DEFAULT_HISTORY,
        page_limit: int = DEFAULT_PAGE_LIMIT,
    ) -> None:
        if history < 0:
            raise ValueError("history must be >= 0")
        self.synapse = synapse
        self.namespace = namespace
        self.page_limit = page_limit
        self.received: int = 0
        self._history: deque[bytes] = deque(maxlen=history)
        self._pages: set[PageFeed] = set()
        self._no_pages = anyio.Event()
        self._no_pages.set()
        self._sub: Subscription | None = None
        self.on_signal: Callable[[Signal], None] | None = None

    async def start(self) -> Signal:
        """Subscribe to the whole namespace, then publish the one DISCOVER; returns it."""
        self._sub = await self.synapse.subscribe(namespace_wildcard(self.namespace), self._on_signal)
        discover = Signal(type=SignalType.DISCOVER)
        await self.synapse.publish(subject_for(self.namespace, SignalType.DISCOVER), discover)
        return discover

    async def _on_signal(self, sig: Signal) -> None:
        self.received += 1
        frame = encode_signal(sig)
        self._history.append(frame)
        for page in self._pages:
            page.put(frame)
        if self.on_signal is not None:
            self.on_signal(sig)

    def open_page(self) -> PageFeed:
        """A feed for a new page, primed with the history."""
        page = PageFeed(self.page_limit)
        for frame in self._history:
            page.put(frame)
        self._pages.add(page)
        if self._no_pages.is_set():
            self._no_pages = anyio.Event()
        return page

    def close_page(self, page: PageFeed) -> None:
        page.close()
        self._pages.discard(page)
        if not self._pages:
            self._no_pages.set()

    async def wait_no_pages(self) -> None:
        """Return once every page has gone (after ``close()``: once each said goodbye)."""
        await self._no_pages.wait()

    @property
    def pages(self) -> int:
        return len(self._pages)

    def close(self) -> None:
        """End every page's feed (their senders finish what is queued, then stop)."""
        for page in list(self._pages):
            self.close_page(page)
