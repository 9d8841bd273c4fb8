"""``cosmo schema`` and ``cosmo completion``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from cli_util import COSMO, cosmo

from cosmonapse import SignalType


def test_the_document_is_json_schema_and_accepts_every_reference_vector() -> None:
    done = cosmo("schema")
    assert done.returncode == 0
    doc = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    vectors = resources.files("cosmonapse.testing") / "vectors" / "valid.jsonl"
    frames = [json.loads(line) for line in vectors.read_text().splitlines() if line.strip()]
    assert {f["type"] for f in frames} >= {"TASK", "FINAL", "STOP", "REGISTER"}
    for frame in frames:
        errors = list(validator.iter_errors(frame))
        assert not errors, (frame["type"], errors[0].message)
    broken = {**frames[0], "type": "TASK", "payload": {"input": "not an object"}}
    assert list(validator.iter_errors(broken))


def test_one_type_the_envelope_and_the_list() -> None:
    task = json.loads(cosmo("schema", "task").stdout)
    assert task["required"] == ["input"] and task["properties"]["capabilities"]["items"] == {"type": "string"}
    env = json.loads(cosmo("schema", "envelope", "--compact").stdout)
    assert env["properties"]["id"]["pattern"] == "^evt_"
    assert cosmo("schema", "--list").stdout.split() == [t.value for t in SignalType]
    bad = cosmo("schema", "NOPE")
    assert bad.returncode == 2 and "cosmo schema --list" in bad.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_complete_commands(shell: str) -> None:
    script = cosmo("completion", shell)
    assert script.returncode == 0 and "_COSMO_COMPLETE" in script.stdout
    env = {**os.environ, "_COSMO_COMPLETE": f"{shell}_complete", "COMP_WORDS": "cosmo d"}
    env["COMP_CWORD"] = "d" if shell == "fish" else "1"  # fish passes the word, the others its index
    got = subprocess.run([*COSMO], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert "dispatch" in got.stdout and "doppler" in got.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shells")
def test_install_adds_one_line_once(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    run = [*COSMO, "completion", "bash", "--install"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30, check=False)
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert first.returncode == 0 and again.returncode == 0 and "already installed" in again.stdout
    rc = (tmp_path / ".bashrc").read_text()
    assert rc.count('eval "$(_COSMO_COMPLETE=bash_source cosmo)"') == 1
