"""The Dendrite side of the registry: mirroring presence into a store, the liveness sweep, reads.

* Presence Signals (REGISTER / DEREGISTER / HEARTBEAT) are filed by the router
  into one bounded queue and applied by one task, in arrival order — so a
  quick REGISTER-then-DEREGISTER can never be applied the other way round.
* Engram and effector REGISTERs are not neurons and are not mirrored.
* ``last_heartbeat`` is our own clock when we heard the Signal, so a peer's
  clock skew cannot make it look dead (or alive).
* The sweep runs on every Dendrite with a store — orchestrators included —
  every third of ``stale_after_s`` (default 3 × ``heartbeat_s``; 0 disables):
  neurons not heard from within ``stale_after_s`` are marked deregistered.
* ``capability=`` handler filters see the store too: at start the store's
  records seed the Dendrite's capability table.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ..errors import DendriteProtocolError
from ..signal import Signal, SignalType
from .record import NeuronRecord, utc_now
from .store import RegistryStore

if TYPE_CHECKING:
    from ..dendrite import Dendrite

__all__ = ["RegistryMixin", "is_neuron_register"]

log = logging.getLogger("cosmonapse.registry")
T = SignalType
#: Presence Signals waiting to be applied before the router waits (backpressure).
PRESENCE_BUFFER = 1024


def is_neuron_register(sig: Signal) -> bool:
    """False for engram and effector registrations (§7.3)."""
    role = sig.payload.get("role")
    return role not in ("engram", "effector") and not sig.payload.get("engram")


class RegistryMixin:
    """``find_neurons``, ``registry_snapshot`` and the presence mirror."""

    # -- reads -------------------------------------------------------------------------
    def _store(self: Dendrite, what: str) -> RegistryStore:
        if self.registry_store is None:
            raise DendriteProtocolError(f"{what} needs a registry_store: Dendrite(..., registry_store=...)")
        store: RegistryStore = self.registry_store
        return store

    async def registry_snapshot(
        self: Dendrite,
        *,
        capability: str | None = None,
        include_deregistered: bool = False,
        max_age_s: float | None = None,
    ) -> list[NeuronRecord]:
        """The registry now, sorted by neuron id; *max_age_s* keeps those heard from recently."""
        records = await self._store("registry_snapshot()").list(capability, include_deregistered)
        if max_age_s is not None:
            cutoff = utc_now() - timedelta(seconds=max_age_s)
            records = [r for r in records if r.last_seen >= cutoff]
        return records

    async def find_neurons(
        self: Dendrite, *, capability: str | None = None, max_age_s: float | None = None
    ) -> list[NeuronRecord]:
        """Live (not deregistered) neurons, optionally only those advertising *capability*."""
        return await self.registry_snapshot(capability=capability, max_age_s=max_age_s)

    # -- life cycle --------------------------------------------------------------------
    @property
    def effective_stale_after_s(self: Dendrite) -> float:
        """``stale_after_s``, defaulting to three heartbeats; 0 means no sweep."""
        if self.stale_after_s is not None:
            return max(0.0, float(self.stale_after_s))
        return 3.0 * self.heartbeat_s if self.heartbeat_s > 0 else 0.0

    async def _subscribe_registry(self: Dendrite) -> None:
        if self.registry_store is not None:
            for t in (T.REGISTER, T.DEREGISTER, T.HEARTBEAT):
                await self._ensure_sub(self._subject(t), self._route)

    def _start_registry(self: Dendrite) -> None:
        """Start the mirror and the sweep (called by ``start()`` before subscribing)."""
        if self.registry_store is None or self._tg is None:
            return
        send, receive = anyio.create_memory_object_stream[Signal](PRESENCE_BUFFER)
        self._presence_send = send
        self._tg.start_soon(self._presence_loop, receive, name=f"registry-mirror:{self.dendrite_id}")
        if self.effective_stale_after_s > 0:
            self._tg.start_soon(self._sweep_loop, name=f"registry-sweep:{self.dendrite_id}")

    async def _announce_to_registry(self: Dendrite) -> None:
        """After our REGISTERs: ask every host to re-announce (§7.1), so the store fills up."""
        if self.registry_store is not None:
            await self._publish(Signal(type=T.DISCOVER))

    async def _registry_stopped(self: Dendrite) -> None:
        """On stop: our own Axons are gone (our DEREGISTERs no longer reach our own mirror)."""
        send, self._presence_send = self._presence_send, None
        if send is not None:
            send.close()
        if self.registry_store is None:
            return
        for neuron_id in list(self._axons):
            try:
                await self.registry_store.mark_deregistered(neuron_id)
            except Exception:
                log.warning("could not mark %s deregistered in the registry", neuron_id, exc_info=True)

    # -- the mirror ----------------------------------------------------------------------
    async def _mirror_presence(self: Dendrite, sig: Signal) -> None:
        """Router side: queue the Signal (waits only when the mirror is far behind)."""
        send = self._presence_send
        if send is None:
            return
        try:
            send.send_nowait(sig)
        except anyio.WouldBlock:
            await send.send(sig)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _presence_loop(self: Dendrite, receive: MemoryObjectReceiveStream[Signal]) -> None:
        store = self.registry_store
        async with receive:
            try:
                for record in await store.list(include_deregistered=False):
                    self._peer_caps.setdefault(record.neuron_id, tuple(record.capabilities))
            except Exception:
                log.warning("could not read the registry store", exc_info=True)
            self._fire_refresh()
            async for sig in receive:
                try:
                    await self._apply_presence(store, sig)
                except Exception:
                    log.warning("registry store failed on %s %s", sig.type.value, sig.id, exc_info=True)
                self._fire_refresh()

    async def _apply_presence(self: Dendrite, store: Any, sig: Signal) -> None:
        neuron_id = sig.neuron
        if not neuron_id:
            return
        now = utc_now()
        if sig.type is T.REGISTER:
            if is_neuron_register(sig):
                version = sig.payload.get("version")
                await store.upsert(
                    NeuronRecord(
                        neuron_id=neuron_id,
                        capabilities=sig.payload.get("capabilities") or [],
                        version=str(version) if version else None,
                        status="registered",
                        last_heartbeat=now,
                        registered_at=now,
                    )
                )
        elif sig.type is T.DEREGISTER:
            await store.mark_deregistered(neuron_id)
        elif sig.type is T.HEARTBEAT:
            await store.touch_heartbeat(neuron_id, now)  # status untouched: "ok" is not a status

    # -- the liveness sweep ------------------------------------------------------------
    async def _sweep_loop(self: Dendrite) -> None:
        while True:
            stale_after = self.effective_stale_after_s
            await anyio.sleep(max(0.01, stale_after / 3))  # allowed: the sweep period (a timer)
            try:
                await self.sweep_registry()
            except Exception:
                log.warning("registry sweep failed", exc_info=True)

    async def sweep_registry(self: Dendrite) -> list[str]:
        """Mark neurons not heard from within ``stale_after_s`` deregistered now; returns their ids."""
        store = self._store("sweep_registry()")
        stale_after = self.effective_stale_after_s
        if stale_after <= 0:
            return []
        cutoff = utc_now() - timedelta(seconds=stale_after)
        keep = frozenset(self._axons)  # ours are alive as long as we are
        marker = getattr(store, "mark_stale", None)
        if marker is not None:
            stale: list[str] = list(await marker(cutoff, keep))
        else:
            stale = [
                r.neuron_id
                for r in await store.list()
                if r.alive and r.last_seen < cutoff and r.neuron_id not in keep
            ]
            for neuron_id in stale:
                await store.mark_deregistered(neuron_id)
        for neuron_id in stale:
            self._peer_caps.pop(neuron_id, None)
            log.info("neuron %s not heard from in %.3g s: marked deregistered", neuron_id, stale_after)
        if stale:
            self._fire_refresh()
        return stale
