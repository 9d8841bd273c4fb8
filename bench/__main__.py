"""Run every benchmark: ``python -m bench`` (or ``python -m bench core nats`` for some).

Each ``bench/bench_<name>.py`` has a ``main()`` that prints its table; figures are
medians measured beside their baselines in the same run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import bench


def main(argv: list[str]) -> int:
    names = sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    wanted = argv or names
    failed = 0
    for name in wanted:
        if name not in names:
            print(f"unknown benchmark {name!r}; have: {', '.join(names)}")
            return 2
        t0 = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        try:
            importlib.import_module(f"bench.bench_{name}").main()
        except Exception:
            failed += 1
            traceback.print_exc()
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
