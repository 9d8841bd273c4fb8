"""cosmonapse_sync: the Cosmonapse Dendrite for blocking code (Flask, Django, WSGI, scripts).

    from cosmonapse_sync import SyncDendrite

    cosmo = SyncDendrite("cosmo://127.0.0.1:7070", namespace="api-demo", dendrite_id="web")

    def view(request):
        reply = cosmo.dispatch_and_wait(neuron="worker", input={"prompt": "hi"}, timeout_s=30)

One facade per process; it starts its event loop thread on first use (never at
import), survives ``fork()`` (gunicorn ``--preload``, uWSGI), cancels and STOPs
work whose caller timed out, and refuses calls that would deadlock.  See
``docs/sync.md``.
"""

from .adapt import SyncNeuronContext, ThreadedNeuron
from .errors import DeadlockError, FacadeClosedError, PortalTimeout, SyncFacadeError
from .facade import SyncDendrite, SyncSubscription
from .pathway import SyncPathway
from .portal import Portal

__all__ = [
    "DeadlockError",
    "FacadeClosedError",
    "Portal",
    "PortalTimeout",
    "SyncDendrite",
    "SyncFacadeError",
    "SyncNeuronContext",
    "SyncPathway",
    "SyncSubscription",
    "ThreadedNeuron",
]
