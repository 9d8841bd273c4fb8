"""Types are part of the API: pyright (standard) is clean, and users' tools see real types.

* ``cosmonapse/`` and ``cosmonapse_sync/`` have no pyright error (standard mode,
  configured in ``pyproject.toml``);
* ``tests/typecheck/user_code.py`` — a user's file that imports every public
  name, builds a Neuron, decorates handlers and calls every ``SyncDendrite``
  member — has no error, and its ``reveal_type`` lines show the types written
  next to them (``# expect: ...``);
* ``pyright --verifytypes`` scores both packages at least ``MIN_COMPLETENESS``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import cosmonapse
import cosmonapse_sync
from cosmonapse_sync import SyncDendrite

ROOT = Path(__file__).resolve().parents[1]
USER_FILE = ROOT / "tests" / "typecheck" / "user_code.py"
MIN_COMPLETENESS = 0.95


def pyright(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        return dict(json.loads(done.stdout))
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not run: {done.stdout}\n{done.stderr}")


@cache
def checked() -> dict[str, Any]:
    """One pyright run over both packages and the user's file."""
    return pyright("cosmonapse", "cosmonapse_sync", str(USER_FILE.relative_to(ROOT)))


def diagnostics(severity: str, where: str) -> list[dict[str, Any]]:
    return [
        d
        for d in checked()["generalDiagnostics"]
        if d["severity"] == severity and Path(d["file"]).resolve().is_relative_to(ROOT / where)
    ]


def describe(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{Path(d['file']).relative_to(ROOT)}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in found
    )


@pytest.mark.parametrize("package", ["cosmonapse", "cosmonapse_sync"])
def test_pyright_standard_finds_no_error_in_the_package(package: str) -> None:
    errors = diagnostics("error", package)
    assert not errors, describe(errors)


def test_a_users_file_type_checks_without_error() -> None:
    errors = diagnostics("error", "tests/typecheck")
    assert not errors, describe(errors)


def test_a_users_file_sees_the_right_types() -> None:
    lines = USER_FILE.read_text().splitlines()
    expected = {
        n + 1: m.group(1).strip()
        for n, line in enumerate(lines)
        if (m := re.search(r"# expect: (.+)$", line))
    }
    revealed = {
        d["range"]["start"]["line"] + 1: d["message"]
        for d in diagnostics("information", "tests/typecheck")
        if d["message"].startswith("Type of")
    }
    assert expected, "the user's file lost its reveal_type lines"
    for line, want in expected.items():
        assert line in revealed, f"user_code.py:{line}: no reveal_type output"
        assert revealed[line].endswith(f'is "{want}"'), f"user_code.py:{line}: {revealed[line]}"


def test_the_users_file_covers_every_public_name_and_every_facade_member() -> None:
    tree = ast.parse(USER_FILE.read_text())
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    missing = (set(cosmonapse.__all__) | set(cosmonapse_sync.__all__)) - imported
    assert not missing, f"user_code.py does not import {sorted(missing)}"
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    members = {name for name in dir(SyncDendrite) if not name.startswith("_")}
    assert not members - used, f"user_code.py does not use SyncDendrite.{sorted(members - used)}"


@pytest.mark.parametrize("package", ["cosmonapse", "cosmonapse_sync"])
def test_verifytypes_completeness(package: str, tmp_path: Path) -> None:
    # run outside the tree, with the package importable from it, as an installed package is seen
    report = pyright(
        "--verifytypes", package, "--ignoreexternal", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}
    )
    completeness = report["typeCompleteness"]
    score = completeness["completenessScore"]
    ambiguous = [s["name"] for s in completeness["symbols"] if s["isExported"] and not s["isTypeKnown"]]
    assert score >= MIN_COMPLETENESS, f"{package}: {score:.1%} < {MIN_COMPLETENESS:.0%}; {ambiguous}"
