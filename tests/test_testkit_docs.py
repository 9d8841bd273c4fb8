"""Every Python block of docs/testing.md is a test file: write them into a fresh project and run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    """(file name, source) of each Python block, in order."""
    out = []
    for n, match in enumerate(BLOCK.finditer(DOC.read_text(encoding="utf-8")), start=1):
        source = match.group(1)
        first = source.splitlines()[0]
        name = first.removeprefix("# file:").strip() if first.startswith("# file:") else f"test_doc_{n}.py"
        out.append((name, source))
    return out


def test_every_python_block_of_the_testing_guide_runs(tmp_path: Path) -> None:
    files = blocks()
    assert len(files) >= 8, "the guide lost its examples"
    for name, source in files:
        (tmp_path / name).write_text(source, encoding="utf-8")
    # A user's own Hypothesis profile applies to the machines of the guide: keep the run short.
    (tmp_path / "conftest.py").write_text(
        "from hypothesis import settings\n"
        "settings.register_profile('docs', max_examples=50)\n"
        "settings.load_profile('docs')\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::pytest.PytestCollectionWarning",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
            "PYTHONPATH": str(tmp_path),
        },
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary and "skipped" not in summary, summary
