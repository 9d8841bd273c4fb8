"""The Dendrite's registry service: presence mirrored into a store, the liveness sweep, reads.

* Presence Signals (REGISTER / DEREGISTER / HEARTBEAT) are filed by the router
  into one bounded queue and applied by one task, in arrival order — so a
  quick REGISTER-then-DEREGISTER can never be applied the other way round.
* Engram and effector REGISTERs are not neurons and are not mirrored.
* ``last_heartbeat`` is our own clock when we heard the Signal, so a peer's
  clock skew cannot make it look dead (or alive).
* The sweep runs on every Dendrite with a store — orchestrators included —
  every third of ``stale_after_s`` (default 3 × ``heartbeat_s``; 0 disables):
  neurons not heard from within ``stale_after_s`` are marked deregistered.
* ``capability=`` handler filters see who has which capability: the
  service learns it from REGISTERs (with or without a store), and at start the
  store's records seed that table.
* Late joiners are not blind: a Dendrite that cares who is there (one with a
  store, presence handlers or capability filters) sends DISCOVER once its
  subscriptions are in place, and again when such a handler is registered while
  it runs; hosts answer with REGISTERs (protocol §7.5), so rosters, stores and
  filters are warm within a second whatever the start order.  A Dendrite that
  keeps no roster asks only when it must explain a dispatch that timed out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core import Core, Route, Service
from ..errors import DendriteProtocolError
from ..hosting import AxonHosting
from ..signal import Signal, SignalType
from ..telemetry import log_extra
from .record import NeuronRecord, utc_now
from .store import RegistryStore

__all__ = ["RegistryService", "is_neuron_register"]

log: logging.Logger = logging.getLogger("cosmonapse.registry")
T = SignalType
#: Presence Signals waiting to be applied before the router waits (backpressure).
PRESENCE_BUFFER = 1024
#: How long a Dendrite without a roster listens for REGISTERs when explaining a timeout.
DISCOVER_ASK_S = 0.25


def is_neuron_register(sig: Signal) -> bool:
    """False for engram and effector registrations (§7.3)."""
    role = sig.payload.get("role")
    return role not in ("engram", "effector") and not sig.payload.get("engram")


class RegistryService(Service):
    """``find_neurons``, ``registry_snapshot``, the presence mirror, the sweep, peers' capabilities."""

    def __init__(
        self,
        core: Core,
        hosting: AxonHosting,
        store: RegistryStore | None,
        *,
        heartbeat_s: float,
        stale_after_s: float | None,
        refreshed: Callable[[], Awaitable[None]],
        presence_wanted: Callable[[], bool] = lambda: False,
    ) -> None:
        self._core = core
        self._presence_wanted = presence_wanted  # handlers that read presence (besides a store)
        self._discover_pending = False
        #: This Dendrite has asked who is there (so what it heard since is the roster).
        self.discovered: bool = False
        self._heard: anyio.Event | None = None  # set (and dropped) at the next REGISTER
        self._hosting = hosting
        self.store: RegistryStore | None = store
        self.heartbeat_s: float = heartbeat_s
        self.stale_after_s: float | None = stale_after_s
        self._refreshed = refreshed
        #: Capabilities of the neurons we heard REGISTER (and the store's, at start), by id.
        self.peer_caps: dict[str, tuple[str, ...]] = {}
        self._presence: MemoryObjectSendStream[Signal] | None = None

    def routes(self) -> Iterable[tuple[SignalType, Route]]:
        return (
            (T.REGISTER, self._on_register),
            (T.DEREGISTER, self._on_deregister),
            (T.HEARTBEAT, self._mirror),
        )

    def wanted(self) -> Iterable[SignalType]:
        return (T.REGISTER, T.DEREGISTER, T.HEARTBEAT) if self.store is not None else ()

    # -- reads -------------------------------------------------------------------------
    def _store(self, what: str) -> RegistryStore:
        if self.store is None:
            raise DendriteProtocolError(f"{what} needs a registry_store: Dendrite(..., registry_store=...)")
        return self.store

    async def registry_snapshot(
        self,
        *,
        capability: str | None = None,
        include_deregistered: bool = False,
        max_age_s: float | None = None,
    ) -> list[NeuronRecord]:
        """The registry now, sorted by neuron id; *max_age_s* keeps those heard from recently."""
        records = await self._store("registry_snapshot()").records(capability, include_deregistered)
        if max_age_s is not None:
            cutoff = utc_now() - timedelta(seconds=max_age_s)
            records = [r for r in records if r.last_seen >= cutoff]
        return records

    def has_capability(self, sig: Signal, capability: str) -> bool:
        """Does the neuron *sig* is about (or the work it offers) have *capability*?"""
        if sig.type in (T.TASK_OFFER, T.TASK):
            caps = sig.payload.get("capabilities") or []
            return capability in caps or (sig.type is T.TASK_OFFER and not caps)
        neuron = sig.directed.id if sig.directed is not None else None
        if not neuron:
            return False
        axon = self._hosting.axons.get(neuron)
        if axon is not None:
            return capability in axon.capabilities
        return capability in self.peer_caps.get(neuron, ())

    # -- life cycle --------------------------------------------------------------------
    @property
    def effective_stale_after_s(self) -> float:
        """``stale_after_s``, defaulting to three heartbeats; 0 means no sweep."""
        if self.stale_after_s is not None:
            return max(0.0, float(self.stale_after_s))
        return 3.0 * self.heartbeat_s if self.heartbeat_s > 0 else 0.0

    async def start(self) -> None:
        """Start the mirror and the sweep (before anything is subscribed)."""
        if self.store is None:
            return
        send, receive = anyio.create_memory_object_stream[Signal](PRESENCE_BUFFER)
        self._presence = send
        self._core.start_service_task(self._presence_loop, self.store, receive, name="registry-mirror")
        stale_after = self.effective_stale_after_s
        if stale_after > 0:
            self._core.clock.add(max(0.01, stale_after / 3), self._sweep_tick, name="registry-sweep")

    def wants_presence(self) -> bool:
        """Does this Dendrite need to know who is there (a store, presence handlers, capability filters)?"""
        return self.store is not None or self._presence_wanted()

    async def announce(self) -> None:
        """After our REGISTERs: ask every host to re-announce (§7.1) so we learn who is already there."""
        if self.wants_presence():
            await self._discover()

    def discover_soon(self) -> None:
        """A presence handler was registered while running: DISCOVER once the control loop gets to it.

        Registrations made in one go share one DISCOVER.
        """
        if self._core.running and not self._discover_pending:
            self._discover_pending = True
            self._core.soon(self._discover)

    async def _discover(self) -> None:
        self._discover_pending = False
        self.discovered = True
        await self._core.publish(Signal(type=T.DISCOVER))

    def seen(self) -> dict[str, tuple[str, ...]]:
        """Every neuron this Dendrite knows of (its own and those heard REGISTER), with its capabilities."""
        known = dict(self.peer_caps)
        known.update((nid, axon.capabilities) for nid, axon in self._hosting.axons.items())
        return known

    async def explain_unanswered(
        self, neuron: str | None, capabilities: list[str] | None, ask_s: float = DISCOVER_ASK_S
    ) -> str | None:
        """Why a dispatch went unanswered, if it is that nobody by that name or with those
        capabilities is there; else None.

        A Dendrite that keeps no roster asks first (DISCOVER) and listens up to *ask_s*:
        an error path, so the happy path sends nothing.
        """
        if self.unseen(neuron, capabilities) is None:
            return None
        if not self.discovered and self._core.running:
            # Bounded whole, the DISCOVER's publish included (the bus may be down: that is
            # often why nobody answered), and never raising: it only adds to an error.
            with anyio.move_on_after(ask_s):
                try:
                    await self._discover()
                except Exception as exc:
                    log.debug("could not ask who is there (DISCOVER): %s", exc)
                    return self.unseen(neuron, capabilities)
                while self.unseen(neuron, capabilities) is not None:
                    if self._heard is None:
                        self._heard = anyio.Event()
                    await self._heard.wait()
        return self.unseen(neuron, capabilities)

    def unseen(self, neuron: str | None, capabilities: list[str] | None) -> str | None:
        """Why a dispatch may have gone unanswered: no such neuron was ever heard of (else None)."""
        known = self.seen()
        namespace = self._core.namespace
        if neuron:
            if neuron in known:
                return None
            what = f"this Dendrite heard no REGISTER from neuron {neuron!r} on namespace {namespace!r}"
        elif capabilities:
            wanted = set(capabilities)
            if any(wanted <= set(caps) for caps in known.values()):
                return None
            what = (
                f"this Dendrite heard no REGISTER from a neuron with capabilities {sorted(wanted)} "
                f"on namespace {namespace!r}"
            )
        else:
            return None
        if not known:
            return f"{what}, nor from any other (is a worker running on this bus and namespace?)"
        names = [f"{nid} {list(caps)}" for nid, caps in sorted(known.items())[:10]]
        more = f" and {len(known) - 10} more" if len(known) > 10 else ""
        return f"{what}; heard from: {', '.join(names)}{more}"

    async def stopped(self, reason: str | None) -> None:
        """Our own Axons are gone (our DEREGISTERs no longer reach our own mirror)."""
        send, self._presence = self._presence, None
        if send is not None:
            send.close()
        if self.store is None:
            return
        for neuron_id in list(self._hosting.axons):
            try:
                await self.store.mark_deregistered(neuron_id)
            except Exception:
                log.warning("could not mark %s deregistered in the registry", neuron_id, exc_info=True)

    # -- the mirror ----------------------------------------------------------------------
    async def _on_register(self, sig: Signal) -> None:
        if sig.directed is not None and sig.directed.id:
            caps = sig.payload.get("capabilities")
            if isinstance(caps, list):
                self.peer_caps[sig.directed.id] = tuple(str(c) for c in caps)
            heard, self._heard = self._heard, None
            if heard is not None:
                heard.set()
        await self._mirror(sig)

    async def _on_deregister(self, sig: Signal) -> None:
        if sig.directed is None or not sig.directed.id:
            return
        self.peer_caps.pop(sig.directed.id, None)
        await self._mirror(sig)

    async def _mirror(self, sig: Signal) -> None:
        """Router side: queue the Signal (waits only when the mirror is far behind)."""
        send = self._presence
        if send is None:
            return
        try:
            send.send_nowait(sig)
        except anyio.WouldBlock:
            await send.send(sig)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _presence_loop(self, store: RegistryStore, receive: MemoryObjectReceiveStream[Signal]) -> None:
        async with receive:
            try:
                for record in await store.records(include_deregistered=False):
                    self.peer_caps.setdefault(record.neuron_id, tuple(record.capabilities))
            except Exception:
                log.warning("could not read the registry store", exc_info=True)
            await self._refreshed()
            async for sig in receive:
                try:
                    await self._apply_presence(store, sig)
                except Exception:
                    log.warning(
                        "registry store failed on %s %s", sig.type.value, sig.id, exc_info=True,
                        extra=log_extra(sig),
                    )  # fmt: skip
                await self._refreshed()

    async def _apply_presence(self, store: RegistryStore, sig: Signal) -> None:
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
    async def _sweep_tick(self) -> None:
        try:
            await self.sweep_registry()
        except Exception:
            log.warning("registry sweep failed", exc_info=True)

    async def sweep_registry(self) -> list[str]:
        """Mark neurons not heard from within ``stale_after_s`` deregistered now; returns their ids."""
        store = self._store("sweep_registry()")
        stale_after = self.effective_stale_after_s
        if stale_after <= 0:
            return []
        cutoff = utc_now() - timedelta(seconds=stale_after)
        keep = frozenset(self._hosting.axons)  # ours are alive as long as we are
        stale = list(await store.mark_stale(cutoff, keep))
        for neuron_id in stale:
            self.peer_caps.pop(neuron_id, None)
            log.info("neuron %s not heard from in %.3g s: marked deregistered", neuron_id, stale_after)
        if stale:
            await self._refreshed()
        return stale
