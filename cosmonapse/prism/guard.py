"""Who may read the bus through Prism: the session token and the Host / Origin checks.

Why each check exists:

* **Token** — the page's data channel carries every Signal of the namespace.  Any local
  process or web page can reach 127.0.0.1, so the channel needs a secret only the person
  who started Prism has: a random token printed in the URL, compared in constant time.
* **Host** — DNS rebinding: a hostile site re-points its own name at 127.0.0.1 and its
  script then talks to us "same-origin".  The Host header then carries the hostile name, so
  only loopback names (and names the operator allowed) are served.
* **Origin** — browsers do not apply CORS to WebSockets: any page may open
  ``ws://127.0.0.1:7071/ws``.  Browsers always send the page's Origin on that handshake, so
  the channel accepts only our own origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["Guard", "is_loopback", "new_token"]

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def new_token() -> str:
    """A fresh session token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (IPv4 or IPv6, bracketed or not)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` → (lower-case host, port or None); None when malformed."""
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or parts.username is not None or parts.path or parts.query:
        return None
    return host.lower(), port


class Guard:
    """The checks for one running Prism: its token, port and the host names it answers to."""

    def __init__(self, token: str, port: int, extra_hosts: Iterable[str] = ()) -> None:
        if len(token) < 16:
            raise ValueError("the session token must be at least 16 characters")
        self.token = token
        self.port = port
        names = {n.strip("[]").lower() for n in (*_LOOPBACK_NAMES, *extra_hosts) if n}
        self.hosts: frozenset[str] = frozenset(names)

    def token_ok(self, candidate: str | None) -> bool:
        """Constant-time comparison with the session token."""
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def host_ok(self, host_header: str | None) -> bool:
        """The Host header names one of our hosts and our port (DNS rebinding defence)."""
        if not host_header:
            return False
        parsed = _split_host(host_header)
        if parsed is None:
            return False
        host, port = parsed
        return host in self.hosts and (port or 80) == self.port

    def origin_ok(self, origin: str | None) -> bool:
        """The Origin is ``http://<one of our hosts>:<our port>`` (cross-site read defence)."""
        if not origin or origin == "null":
            return False
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            return False
        return parts.hostname.lower() in self.hosts and (port or 80) == self.port
