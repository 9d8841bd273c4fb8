"""``python -m bench instructions`` counts a child process under callgrind: the child must run its loop."""

from __future__ import annotations

import pytest

from bench import bench_instructions


@pytest.mark.parametrize("backend", bench_instructions.BACKENDS)
@pytest.mark.parametrize("which", ["ours", "raw"])
def test_the_counted_child_runs_its_loop(which: str, backend: str) -> None:
    bench_instructions._child(which, backend, 1)  # one round of 1,000 callers, both ways
