"""Errors of the blocking facade; all are ``CosmonapseError`` so one ``except`` catches the lot."""

from __future__ import annotations

from cosmonapse.errors import CosmonapseError

__all__ = ["DeadlockError", "FacadeClosedError", "PortalTimeout", "SyncFacadeError"]


class SyncFacadeError(CosmonapseError):
    """Base class of the facade's own errors."""


class DeadlockError(SyncFacadeError, RuntimeError):
    """A blocking call was made where blocking would hang or stall an event loop.

    Raised instead of deadlocking when the sync API is called from the facade's own
    portal thread or from any thread that is running an asyncio or trio loop.
    """


class FacadeClosedError(SyncFacadeError):
    """The facade (or the portal a Pathway belongs to) is closed, or was left behind by ``fork()``."""


class PortalTimeout(SyncFacadeError, TimeoutError):
    """The portal did not answer within the caller-side backstop deadline (a wedged event loop)."""
