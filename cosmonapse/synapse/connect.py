"""``connect_synapse(url)``: one call from a URL to a connected Synapse.

Schemes: ``memory://`` (a fresh in-process bus), ``cosmo://host[:port][?token=T]``
(the dev bus, port 7070 by default) and ``nats://host:port[,host:port...]`` (``tls://`` for NATS
over TLS; credentials may sit in the URL: ``nats://user:pass@host``, ``nats://token@host``).
Keyword arguments go to the adapter's constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .base import Synapse
from .dev import DevSynapse
from .memory import MemorySynapse

__all__ = ["connect_synapse"]

#: Stand-ins consulted before the schemes, newest last: ``cosmonapse.testing.TestSynapse``
#: pushes one for the length of a test so unmodified code gets an in-process bus.
OVERRIDES: list[Callable[..., Synapse]] = []

_SCHEMES = "memory://, cosmo://host[:port] or nats://host:port[,host:port...] (tls:// for TLS)"


def _nats_servers(url: str) -> list[str]:
    """``nats://a:1,b:2`` (or ``nats://a:1,nats://b:2``) → ``["nats://a:1", "nats://b:2"]``.

    A part without a scheme takes the URL's (``tls://a:1,b:2`` is TLS to both).
    """
    scheme, _, rest = url.partition("://")
    servers = []
    for part in rest.split(","):
        part = part.strip().rstrip("/")
        if "://" not in part:
            part = f"{scheme}://{part}"
        if part.endswith("://"):
            raise ValueError(f"empty server address in {url!r}")
        servers.append(part)
    return servers


def make_synapse(url: str, **kw: Any) -> Synapse:
    """Build (without connecting) the Synapse for *url*; ``ValueError`` for an unknown scheme."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"not a synapse URL: {url!r} (expected {_SCHEMES})")
    scheme = urlsplit(url).scheme.lower()
    if OVERRIDES and scheme in ("memory", "cosmo", "nats", "tls"):
        return OVERRIDES[-1](url, **kw)
    if scheme == "memory":
        return MemorySynapse(**kw)
    if scheme == "cosmo":
        return DevSynapse(url, **kw)
    if scheme in ("nats", "tls"):
        from .nats import NatsSynapse  # lazy: optional adapter

        return NatsSynapse(_nats_servers(url), **kw)
    raise ValueError(f"unsupported synapse URL scheme {scheme!r} in {url!r} (expected {_SCHEMES})")


async def connect_synapse(url: str, **kw: Any) -> Synapse:
    """The connected Synapse for *url*; close it with ``await synapse.close()``."""
    synapse = make_synapse(url, **kw)
    await synapse.connect()
    return synapse
