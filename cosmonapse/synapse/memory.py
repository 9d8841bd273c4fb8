"""``MemorySynapse``: the in-process bus (§20), with bounded buffers and backpressure.

``publish`` files the Signal object (not a copy) into the buffer of every
matching subscription — solo subscribers each, one member per queue group
round-robin — and returns.  When a subscriber's buffer is full, ``publish``
waits until its pump has made room: a slow subscriber slows its publishers
instead of growing memory.  No task is started per message.
"""

from __future__ import annotations

from anyio.abc import TaskGroup

from ..signal import Signal
from .base import DEFAULT_SUBSCRIPTION_BUFFER, Subscription, Synapse
from .index import SubscriptionIndex

__all__ = ["MemorySynapse"]


class MemorySynapse(Synapse):
    """An in-process bus; several Dendrites in one process share one instance."""

    url = "memory://"
    _files_by_offer = False

    def __init__(self, *, subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER) -> None:
        super().__init__(subscription_buffer=subscription_buffer)
        self._index: SubscriptionIndex[Subscription] = SubscriptionIndex()
        self._subs: set[Subscription] = set()

    async def _open(self, tg: TaskGroup) -> None:
        return None

    async def _shutdown(self) -> None:
        # Subscriptions end with their pumps: forget them, so a later connect() starts
        # clean and no dead member keeps its turn in a queue group.
        for sub in self._subs:
            sub._close()
        self._subs.clear()
        self._index = SubscriptionIndex()

    async def publish(self, subject: str, signal: Signal) -> None:
        if self._tg is None:
            self._check_open(f"publish to {subject!r}")
        for sub in self._index.targets(subject):
            if not sub.deliver_nowait(signal):
                await sub.deliver(signal)

    def publish_nowait(self, subject: str, signal: Signal) -> bool:
        if self._tg is None:
            return False  # publish() raises the right error
        targets = self._index.targets(subject)
        if len(targets) == 1:
            return targets[0].deliver_nowait(signal)  # the common case: all or nothing already
        for sub in targets:
            if not sub.has_room():
                return False  # nothing filed yet: all or nothing
        for sub in targets:
            sub.deliver_nowait(signal)
        return True

    async def _on_subscribe(self, sub: Subscription) -> None:
        for subject in sub.subjects:
            self._index.add(subject, sub, sub.queue_group)
        self._subs.add(sub)

    async def _on_unsubscribe(self, sub: Subscription) -> None:
        for subject in sub.subjects:
            self._index.remove(subject, sub)
        self._subs.discard(sub)
