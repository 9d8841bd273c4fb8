"""Ending the child processes a benchmark starts (bus, workers, observers, Prism)."""

from __future__ import annotations

import subprocess
from typing import Any

__all__ = ["stop_child"]


def stop_child(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within *timeout* seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
