"""Prism: the live, read-only browser view of one namespace of a bus (seed 000, "Watch it").

The pieces, each in its own module:

* ``guard``   — the session token and the Host / Origin checks (no web framework needed);
* ``fanout``  — the bus tap: one subscription to ``cosmonapse.<ns>.>``, one DISCOVER, and a
  bounded, batching queue per open page;
* ``app``     — the Starlette application (page, assets, the ``/ws`` data channel);
* ``server``  — Hypercorn on a socket we bind, under asyncio or trio, next to the tap.

Starlette and Hypercorn come with the ``prism`` extra (``pip install 'cosmonapse[prism]'``);
the core package never imports them.  ``require_extra()`` turns their absence into one clear
message.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRA_HINT", "MissingExtraError", "require_extra"]

EXTRA_HINT = "Prism needs the 'prism' extra: pip install 'cosmonapse[prism]'"


class MissingExtraError(RuntimeError):
    """Starlette or Hypercorn is not installed."""


def require_extra() -> None:
    """Raise ``MissingExtraError`` naming the extra when a Prism dependency is missing."""
    missing = [name for name in ("starlette", "hypercorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"{EXTRA_HINT} (missing: {', '.join(missing)})")
