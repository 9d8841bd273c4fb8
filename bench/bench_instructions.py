"""Instructions per in-process round trip at 1,000 in flight, counted by callgrind.

Wall-clock rates on a shared VM swing by 10–20 % from run to run (the raw trio
baseline alone moved between 20,800 and 29,600 rt/s in one day), which hides a
change worth a few percent.  Instruction counts do not swing: each figure here is
the difference between two runs of the same loop under ``valgrind --tool=callgrind``
(6 and 2 rounds per caller), divided by the 4,000 calls in between, so start-up and
shutdown cancel out and what is left is the steady-state cost of one round trip.

Beside it, the raw anyio round trip (``bench_core._raw_inflight``) counted the same
way.  Fewer instructions are not the same as less time (cache misses, system calls),
so this table supports the timed figures in ``targets``; it does not replace them.
Skipped when valgrind is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import anyio

from bench import bench_core
from bench.report import format_table

CLIENTS = 1_000
ROUNDS = (2, 6)  # the two runs whose difference is counted
BACKENDS = ("asyncio", "trio")
_ROOT = Path(__file__).resolve().parent.parent


async def _ours(rounds: int) -> None:
    bench_core.ROUNDS_PER_CLIENT = rounds
    await bench_core._with_pair(bench_core._dispatch_inflight, max_concurrent_tasks=CLIENTS)


async def _raw(rounds: int) -> None:
    await bench_core._raw_inflight(CLIENTS, rounds)


def _child(which: str, backend: str, rounds: int) -> None:
    anyio.run(_ours if which == "ours" else _raw, rounds, backend=backend)


def _count(which: str, backend: str, rounds: int) -> int:
    """Instructions callgrind counts for one run of the child (the interpreter's start included)."""
    args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    args += ["-m", "bench.bench_instructions", "child", which, backend, str(rounds)]
    done = subprocess.run(args, cwd=_ROOT, capture_output=True, text=True, timeout=600, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_call(which: str, backend: str) -> float:
    low, high = ROUNDS
    return (_count(which, backend, high) - _count(which, backend, low)) / (CLIENTS * (high - low))


def main() -> None:
    if shutil.which("valgrind") is None:
        print("instructions: skipped (valgrind is not installed)")
        return
    rows = []
    for backend in BACKENDS:
        ours, raw = per_call("ours", backend), per_call("raw", backend)
        rows.append({
            "metric": f"instructions per round trip, 1,000 in flight, {backend}",
            "value": ours, "baseline": raw, "ratio": raw / ours,
            "target": "(no syscalls counted)",
        })  # fmt: skip
    print(format_table("in-process instructions per call (callgrind; baseline: raw anyio round trip)", rows))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
