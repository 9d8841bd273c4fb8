"""Group a cProfile's own time ("tottime") by source file into named components.

Each entry of a profile is a function: Python ones carry their file, C ones show
as ``~`` with a name such as ``<method 'send' of '_socket.socket' objects>``.
A C function's own time is what runs inside it, so C code that the event loop
runs on a callback's behalf (asyncio's C ``Task.__step``, ``Context.run``) lands
in the event loop's component, and the kernel time of a socket call lands in
"socket syscalls".
"""

from __future__ import annotations

import re

from bench.profiling import Entries

__all__ = ["COMPONENTS", "IDLE", "classify", "split"]

# Components, in print order.  A C function (file ``~``) is the event loop's unless it is
# a socket call, a poll, or JSON / id / time work of the Signal model.

LOOP = "event loop (asyncio / trio)"
ANYIO = "anyio layer"
SOCKET = "socket syscalls"
MODEL = "JSON + Signal model"
BUS = "bus client / server (synapse/)"
CORE = "core routing + runners"
HOSTING = "hosting + Axon"
PATHWAY = "Pathway + dispatch API"
TELEMETRY = "telemetry hooks"
BENCH = "bench harness (the calls' loop)"
OTHER = "other"
CALLER = "(the caller's component)"
#: Blocked in the event loop's poll (epoll/select): waiting, not CPU; left out of the split.
IDLE = "idle in poll (excluded)"

COMPONENTS = (LOOP, ANYIO, SOCKET, MODEL, BUS, CORE, HOSTING, PATHWAY, TELEMETRY, BENCH, OTHER)

_LOOP_DIRS = ("/asyncio/", "/trio/", "/outcome/", "/exceptiongroup/")
_ANYIO_DIRS = ("/anyio/", "/sniffio/")
_LOOP_FILES = ("/selectors.py", "/contextvars.py", "/_weakrefset.py", "/heapq.py", "/socket.py", "/ssl.py")
_MODEL_DIRS = ("/attr/", "/attrs/", "/cattrs/")
_COSMO = "/cosmonapse/"
_BY_FILE = {
    "codec.py": MODEL,
    "signal.py": MODEL,
    "ids.py": MODEL,
    "envelope.py": MODEL,
    "clock.py": MODEL,
    "core.py": CORE,
    "runners.py": CORE,
    "deadlines.py": CORE,
    "taskhost.py": CORE,
    "stops.py": CORE,
    "subjects.py": CORE,
    "lifecycle.py": CORE,
    "handlers.py": CORE,
    "hosting.py": HOSTING,
    "axon.py": HOSTING,
    "context.py": HOSTING,
    "emitters.py": HOSTING,
    "pathway.py": PATHWAY,
    "dendrite.py": PATHWAY,
    "dispatching.py": PATHWAY,
    "retry.py": PATHWAY,
}
_SOCKET_C = re.compile(r"of '_socket\.socket' objects|of 'socket' objects|_socket\.|_ssl\.")
_POLL_C = re.compile(r"of 'select\.(epoll|poll|kqueue)' objects|built-in method select\.select")
_MODEL_C = re.compile(r"orjson|_uuid|posix\.urandom|from_bytes|datetime|strftime|time\.time_ns|_random")


def classify(file: str, func: str) -> str:
    """The component of one profile entry (*file* ``~`` for a C function)."""
    if file == "~":
        if _POLL_C.search(func):
            return IDLE
        if _SOCKET_C.search(func):
            return SOCKET
        if _MODEL_C.search(func):
            return MODEL
        return CALLER
    if file.startswith("<attrs generated"):  # attrs' generated __init__/__eq__ of our models
        return MODEL
    if _COSMO in file:
        rel = file.rsplit(_COSMO, 1)[1]
        if rel.startswith("synapse/"):
            return BUS
        if rel.startswith("telemetry/"):
            return TELEMETRY
        if rel.startswith(("neuron/", "registry/")):
            return HOSTING
        return _BY_FILE.get(rel, OTHER)
    if "/bench/" in file:
        return BENCH
    if any(d in file for d in _ANYIO_DIRS):
        return ANYIO
    if any(d in file for d in _LOOP_DIRS) or file.endswith(_LOOP_FILES):
        return LOOP
    if any(d in file for d in _MODEL_DIRS) or file.endswith(("/uuid.py", "/random.py")):
        return MODEL
    return OTHER


def split(entries: Entries) -> dict[str, float]:
    """{component: own seconds} over a profile's entries (IDLE included, to be left out).

    A C function that is neither a socket call, a poll nor JSON / id work (``len``,
    ``dict.get``, ``Context.run`` that runs asyncio's C task step...) is charged to the
    component of the function that called it, in proportion to the time from each caller.
    """
    out: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        out[name] = out.get(name, 0.0) + seconds

    for (file, _line, func), (own, _calls, callers) in entries.items():
        name = classify(file, func)
        if name != CALLER:
            add(name, own)
            continue
        charged = 0.0
        for (cfile, _cline, cfunc), seconds in callers.items():
            caller = classify(cfile, cfunc)
            add(LOOP if caller in (CALLER, IDLE, SOCKET) else caller, seconds)
            charged += seconds
        add(LOOP, max(own - charged, 0.0))  # no caller on record: called by the loop's C code
    return out
