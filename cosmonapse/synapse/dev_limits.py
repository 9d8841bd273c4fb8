"""The dev bus server's limits: what one client may cost it before it is refused.

Everything a peer can make the server hold is bounded here, with the default
and the reason for it (``docs/buses.md`` has the same table):

* ``auth_timeout`` — with a token, the ``auth`` line must arrive this soon
  after the ``welcome`` (NATS uses 2 s too); a socket that says nothing is
  closed instead of holding a slot.
* ``max_line_before_auth`` — the longest line read before authentication: an
  ``auth`` line is tiny, so an unauthenticated socket buffers a few KiB, not the
  1 MiB an authenticated publisher may send.
* ``max_connections`` — open connections; more are answered ``err`` and closed
  at once, so the process keeps file descriptors for its own work (clamped below
  the process's descriptor limit).
* ``max_outbox_total`` — bytes queued for all connections together; past it the
  connection holding the most is dropped as a slow consumer.
* ``auth_attempts_burst`` / ``auth_attempts_per_s`` — failed ``auth`` attempts
  per client address: a burst, then one per second; beyond that every attempt
  is refused without looking at the token, so guessing runs at about 1/s.

Subject rules (NATS's): tokens separated by ``.``, none empty, no whitespace;
publishing to a wildcard (``*``, ``>``) is refused, and ``>`` may only end a
subscription pattern.
"""

from __future__ import annotations

import resource
import time
from collections import OrderedDict

import attrs

__all__ = ["DEFAULT_LIMITS", "AuthThrottle", "DevBusLimits", "subject_error"]

_WHITESPACE = frozenset(" \t\r\n\f\v\0")
_FD_RESERVE = 64  # descriptors kept for the listener, logs and the process's own files


@attrs.frozen
class DevBusLimits:
    """Per-server limits of the dev bus (see the module docstring for each one)."""

    auth_timeout: float = 2.0
    max_line_before_auth: int = 4096
    max_connections: int = 1024
    max_outbox_total: int = 512 * 1024 * 1024
    auth_attempts_burst: int = 10
    auth_attempts_per_s: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.auth_timeout <= 0 or self.auth_attempts_per_s <= 0:
            raise ValueError("auth_timeout and auth_attempts_per_s must be > 0")
        if min(self.max_line_before_auth, self.max_connections, self.max_outbox_total) < 1:
            raise ValueError("max_line_before_auth, max_connections and max_outbox_total must be >= 1")
        if self.auth_attempts_burst < 1:
            raise ValueError("auth_attempts_burst must be >= 1")

    def connection_cap(self) -> int:
        """``max_connections``, lowered to what the process's descriptor limit allows."""
        try:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (OSError, ValueError):
            return self.max_connections
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - _FD_RESERVE))


DEFAULT_LIMITS = DevBusLimits()


class AuthThrottle:
    """Failed auth attempts per address: a token bucket of ``burst`` refilled at ``per_s``.

    Remembers at most ``max_addresses`` addresses (the least recently seen go first).
    """

    __slots__ = ("_buckets", "burst", "max_addresses", "per_s")

    def __init__(self, burst: int, per_s: float, max_addresses: int = 4096) -> None:
        self.burst: int = burst
        self.per_s: float = per_s
        self.max_addresses: int = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_s)

    def allowed(self, address: str) -> bool:
        """May *address* try a token now (is any of its failure budget left)?"""
        return self._tokens(address, time.monotonic()) >= 1.0

    def failed(self, address: str) -> None:
        """*address* sent a wrong token: spend one unit of its budget."""
        now = time.monotonic()
        tokens = max(0.0, self._tokens(address, now) - 1.0)
        self._buckets[address] = (tokens, now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)


def subject_error(subject: str, *, publish: bool) -> str | None:
    """Why *subject* is not a valid subject to publish on (or pattern to subscribe to); None if it is."""
    if not _WHITESPACE.isdisjoint(subject):
        return f"subject {subject[:200]!r} contains whitespace or NUL"
    tokens = subject.split(".")
    if "" in tokens:
        return f"subject {subject[:200]!r} has an empty token (leading, trailing or double '.')"
    if publish:
        if "*" in tokens or ">" in tokens:
            return f"cannot publish to a wildcard subject: {subject[:200]!r}"
    elif ">" in tokens[:-1]:
        return f"subject {subject[:200]!r}: '>' may only be the last token"
    return None
