"""Which subscriptions get a message published on a subject (§5.1, §5.2, §17.4).

Exact subjects are a dict look-up; wildcard patterns are checked only against
subjects not seen before, and the answer is cached per subject until the set
of subscriptions changes.  Queue groups pick one member round-robin with one
counter per group name, as the reference brokers do.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from ..subjects import is_wildcard, subject_matches

__all__ = ["SubscriptionIndex"]

S = TypeVar("S", bound=Hashable)

_Plan = tuple[tuple[S, ...], tuple[tuple[str, tuple[S, ...]], ...]]


class SubscriptionIndex(Generic[S]):
    """Subscriptions keyed by pattern, with queue-group round-robin."""

    __slots__ = ("_cache", "_counters", "_exact", "_wild")

    def __init__(self) -> None:
        self._exact: dict[str, list[tuple[S, str | None]]] = {}
        self._wild: list[tuple[str, S, str | None]] = []
        self._cache: dict[str, _Plan] = {}
        self._counters: dict[str, int] = {}

    def add(self, pattern: str, sub: S, queue_group: str | None = None) -> None:
        if is_wildcard(pattern):
            self._wild.append((pattern, sub, queue_group))
        else:
            self._exact.setdefault(pattern, []).append((sub, queue_group))
        self._cache.clear()

    def remove(self, pattern: str, sub: S) -> None:
        if is_wildcard(pattern):
            self._wild = [w for w in self._wild if w[0] != pattern or w[1] != sub]
        else:
            entries = [e for e in self._exact.get(pattern, ()) if e[0] != sub]
            if entries:
                self._exact[pattern] = entries
            else:
                self._exact.pop(pattern, None)
        self._cache.clear()

    def __len__(self) -> int:
        return sum(len(v) for v in self._exact.values()) + len(self._wild)

    def _plan(self, subject: str) -> _Plan:
        solo: list[S] = []
        groups: dict[str, list[S]] = {}
        for sub, group in self._exact.get(subject, ()):
            if group is None:
                solo.append(sub)
            else:
                groups.setdefault(group, []).append(sub)
        for pattern, sub, group in self._wild:
            if subject_matches(pattern, subject):
                if group is None:
                    solo.append(sub)
                else:
                    groups.setdefault(group, []).append(sub)
        plan = (tuple(solo), tuple((g, tuple(m)) for g, m in groups.items()))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[subject] = plan
        return plan

    def targets(self, subject: str) -> list[S]:
        """Every solo subscriber, then one member of each queue group (round-robin)."""
        plan = self._cache.get(subject)
        if plan is None:
            plan = self._plan(subject)
        solo, groups = plan
        if not groups:
            return list(solo)
        out = list(solo)
        for name, members in groups:
            n = self._counters.get(name, 0)
            self._counters[name] = n + 1
            out.append(members[n % len(members)])
        return out
