"""Test support: run a dev bus, a worker or a web server as a child process, ready when it says so.

For your own tests of a Flask/Django/WSGI app on the facade (and ours)::

    with dev_bus("api-demo") as url, ChildProcess([sys.executable, "worker.py"], ready="worker ready",
                                                  env={"SYNAPSE_URL": url}):
        ...

Readiness is a line the child prints (read as it arrives, with a deadline), never a sleep.
Output goes to a pipe read on demand; ``output`` has everything read so far.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType

__all__ = ["ChildProcess", "dev_bus", "gunicorn"]


class ChildProcess:
    """A child process whose stdout+stderr we can wait on for a line matching a pattern."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        ready: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.cmd: list[str] = list(cmd)
        self.ready_pattern = ready
        self.env: dict[str, str] = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.match: re.Match[str] | None = None
        self.output: str = ""
        self._buf = b""
        self._pos = 0  # how far wait_for has consumed self.output
        self.returncode: int | None = None

    def start(self) -> ChildProcess:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )
        os.set_blocking(self.proc.stdout.fileno(), False)  # type: ignore[union-attr]
        if self.ready_pattern is not None:
            self.match = self.wait_for(self.ready_pattern, self.timeout_s)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _read_some(self, timeout_s: float) -> bool:
        """Read what is available within *timeout_s*; False at end of output."""
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(max(0.0, timeout_s)):
                return True
        chunk = self.proc.stdout.read()
        if chunk is None:
            return True
        if not chunk:
            return False
        self._buf += chunk
        text, _, self._buf = self._buf.rpartition(b"\n")
        if text or _:
            self.output += text.decode(errors="replace") + "\n"
        return True

    def wait_for(self, pattern: str, timeout_s: float | None = None) -> re.Match[str]:
        """The first match of *pattern* in output not yet consumed by an earlier ``wait_for``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            found = regex.search(self.output, self._pos)
            if found:
                self._pos = found.end()
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.cmd[1:3]} did not print /{pattern}/; output so far:\n{self.output}"
                )
            if not self._read_some(left):
                raise RuntimeError(f"{self.cmd[1:3]} exited before printing /{pattern}/:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Signal the child, wait (kill after *timeout_s*), read the rest; its exit code (idempotent)."""
        proc = self.proc
        if proc is None:
            return 0
        if self.returncode is not None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            if not self._read_some(deadline - time.monotonic()):
                break
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        while self._read_some(0.0):
            pass
        if self._buf:
            self.output += self._buf.decode(errors="replace")
            self._buf = b""
        proc.stdout.close()  # type: ignore[union-attr]
        self.returncode = code
        return code

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def dev_bus(namespace: str = "dev", *, token: str | None = None) -> Iterator[str]:
    """Run ``cosmo synapse start memory --port 0`` in a child process; yields its ``cosmo://`` URL."""
    cmd = [sys.executable, "-m", "cosmonapse", "synapse", "start", "memory", "--port", "0", "-n", namespace]
    env = {"COSMO_SYNAPSE_TOKEN": token} if token else {}
    with ChildProcess(cmd, ready=r"listening on (cosmo://\S+)", env=env) as bus:
        assert bus.match is not None
        url = bus.match.group(1)
        yield f"{url}?token={token}" if token else url


@contextmanager
def gunicorn(
    app: str,
    *,
    chdir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    worker_class: str = "sync",
    threads: int = 1,
    preload: bool = False,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> Iterator[tuple[str, ChildProcess]]:
    """Serve *app* (``module:callable``) with gunicorn on a free loopback port; yields (base URL, process).

    Stopped with SIGTERM (graceful: workers finish and run their atexit hooks) on exit.
    """
    cmd = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "-w", str(workers), "-k", worker_class]
    cmd += ["--threads", str(threads), "--no-control-socket", "--graceful-timeout", "10"]
    if chdir is not None:
        cmd += ["--chdir", str(chdir)]
    if preload:
        cmd.append("--preload")
    cmd += [*extra, app]
    with ChildProcess(cmd, ready=r"Listening at: (http://\S+) ", env=env) as server:
        assert server.match is not None
        yield server.match.group(1), server
