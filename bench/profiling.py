"""A timed window in a bench process: its CPU time and, optionally, a cProfile of it.

The driver of ``python -m bench profile`` is the caller process of every workload;
the other processes (bus, worker) are bench roles.  The caller opens and closes the
window in itself and in each role at the same moments:

* ``COSMO_BENCH_WINDOW=<dir>`` in a role's environment makes it install two signal
  handlers (``install_from_env``): SIGUSR1 opens the window, SIGUSR2 closes it,
  writes ``<dir>/<pid>.json`` (CPU and wall seconds, and the profile's entries) and
  prints ``window-done`` on stdout, which the driver waits for (bounded);
* ``COSMO_BENCH_PROFILE=1`` as well switches cProfile on for the window.

Bench-only: nothing in ``cosmonapse/`` reads these variables.  cProfile runs on its
default (wall) clock, which is cheap to read; time spent blocked in the event loop's
poll shows up as that poll call's own time and is left out of the CPU split
(``components``).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from bench.children import stop_child

__all__ = ["Role", "Window", "WindowResult", "install_from_env", "proc_cpu_s", "role"]

WINDOW_ENV = "COSMO_BENCH_WINDOW"
PROFILE_ENV = "COSMO_BENCH_PROFILE"
DONE = b"window-done"

Key = tuple[str, int, str]  # (file, line, function); file "~" for a C function
#: One profile entry: key -> (own ("tottime") seconds, calls, {caller: own seconds when called
#: from it}); the callers are kept for C functions only (``components`` charges them to theirs).
Entries = dict[Key, tuple[float, int, dict[Key, float]]]


@attrs.define
class WindowResult:
    """What one process spent over the window."""

    cpu_s: float  # user + system CPU of the whole process (every thread)
    wall_s: float
    entries: Entries = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "entries": [
                [*key, own, calls, [[*c, t] for c, t in callers.items()]]
                for key, (own, calls, callers) in self.entries.items()
            ],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WindowResult:
        entries = {
            (f, int(ln), fn): (
                float(own),
                int(calls),
                {(cf, int(cl), cfn): float(t) for cf, cl, cfn, t in callers},
            )
            for f, ln, fn, own, calls, callers in raw["entries"]
        }
        return cls(cpu_s=float(raw["cpu_s"]), wall_s=float(raw["wall_s"]), entries=entries)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """Open / close a timed window in this process; ``profile`` adds cProfile to it."""

    def __init__(self, *, profile: bool) -> None:
        self.profile = profile
        self._profiler: cProfile.Profile | None = None
        self._cpu0 = self._wall0 = 0.0
        self.result: WindowResult | None = None

    def open(self) -> None:
        if self.profile:
            self._profiler = cProfile.Profile()
        self._wall0, self._cpu0 = time.perf_counter(), _cpu_s()
        if self._profiler is not None:
            self._profiler.enable()

    def close(self) -> WindowResult:
        if self._profiler is not None:
            self._profiler.disable()
        cpu, wall = _cpu_s() - self._cpu0, time.perf_counter() - self._wall0
        entries: Entries = {}
        if self._profiler is not None:
            stats: Any = pstats.Stats(self._profiler).stats  # {key: (cc, nc, tt, ct, callers)}
            for key, (cc, _nc, tt, _ct, callers) in stats.items():
                by_caller = {c: v[2] for c, v in callers.items()} if key[0] == "~" else {}
                entries[key] = (tt, cc, by_caller)
            self._profiler = None
        self.result = WindowResult(cpu_s=cpu, wall_s=wall, entries=entries)
        return self.result


def install_from_env() -> None:
    """In a bench role: open/close a window on SIGUSR1/SIGUSR2 if ``COSMO_BENCH_WINDOW`` is set."""
    folder = os.environ.get(WINDOW_ENV)
    if not folder:
        return
    window = Window(profile=os.environ.get(PROFILE_ENV) == "1")

    def opened(_signum: int, _frame: Any) -> None:
        window.open()

    def closed(_signum: int, _frame: Any) -> None:
        result = window.close()
        path = Path(folder) / f"{os.getpid()}.json"
        path.write_text(json.dumps(result.to_json()))
        os.write(sys.stdout.fileno(), DONE + b"\n")

    signal.signal(signal.SIGUSR1, opened)
    signal.signal(signal.SIGUSR2, closed)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux ``/proc``): for nats-server."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Role:
    """A bench role process whose stdout we read line by line, every read bounded."""

    def __init__(self, proc: subprocess.Popen[bytes], folder: Path) -> None:
        self.proc = proc
        self.folder = folder
        self._buf = b""

    def expect(self, marker: bytes, timeout: float = 30) -> bytes:
        """The first stdout line holding *marker*; RuntimeError if none within *timeout* s."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if marker in line:
                    return line.strip()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.proc.args} printed no {marker!r} within {timeout} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.proc.args} exited (code {self.proc.wait()}) before {marker!r}")
                self._buf += chunk

    def open_window(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR1)

    def close_window(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR2)

    def result(self) -> WindowResult:
        """Wait for the role's ``window-done``, then read what it wrote."""
        self.expect(DONE)
        path = self.folder / f"{self.proc.pid}.json"
        return WindowResult.from_json(json.loads(path.read_text()))


@contextmanager
def role(
    args: list[str], folder: Path, *, profile: bool, ready: bytes = b"ready", cwd: Path | None = None
) -> Iterator[tuple[Role, bytes]]:
    """Start ``python <args>`` with the window switched on; yields (the role, its ready line)."""
    env = {**os.environ, WINDOW_ENV: str(folder), PROFILE_ENV: "1" if profile else "0"}
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, bufsize=0)
    try:
        r = Role(proc, folder)
        yield r, r.expect(ready)
    finally:
        stop_child(proc)
