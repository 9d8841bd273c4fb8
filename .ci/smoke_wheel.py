"""Smoke test of the built distributions, run by ``.ci/package`` with a fresh venv's Python.

    python smoke_wheel.py dist/cosmonapse-*.whl dist/cosmonapse-*.tar.gz

It runs outside the checkout, against the installed wheel: the package imports
from site-packages, its version is the metadata's, the metadata carries the
license, classifiers and extras, the wheel holds py.typed, the golden vectors
and LICENSE, the sdist holds LICENSE and no tests, the vectors decode, the
in-process demo answers, ``cosmo --help`` works, and a Postgres backend built
without the extra says what to install.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

EXTRAS = {"nats-server", "postgres", "nkeys", "otel", "prism", "mcp", "testing", "test", "dev", "bench"}


def check(condition: object, what: str) -> None:
    if not condition:
        raise SystemExit(f"smoke: FAILED: {what}")
    print(f"smoke: ok: {what}")


def main() -> None:
    wheel, sdist = sys.argv[1], sys.argv[2]
    import cosmonapse
    import cosmonapse_sync

    site = Path(cosmonapse.__file__).resolve().parents[1]
    check(site.name == "site-packages", f"cosmonapse imports from the installed wheel ({site})")
    check(Path(cosmonapse_sync.__file__).resolve().parents[1] == site, "cosmonapse_sync too")
    version = importlib.metadata.version("cosmonapse")
    check(cosmonapse.__version__ == version, f"cosmonapse.__version__ is the metadata's ({version})")

    meta = importlib.metadata.metadata("cosmonapse")
    check(meta["License-Expression"] == "Apache-2.0", "License-Expression: Apache-2.0")
    check("Typing :: Typed" in (meta.get_all("Classifier") or []), "classifiers, Typing :: Typed among them")
    extras = set(meta.get_all("Provides-Extra") or [])
    check(extras >= EXTRAS, f"extras {sorted(EXTRAS)} (has {sorted(extras)})")

    names = set(zipfile.ZipFile(wheel).namelist())
    for member in (
        "cosmonapse/py.typed",
        "cosmonapse/testing/vectors/valid.jsonl",
        "cosmonapse/testing/vectors/invalid.jsonl",
        "cosmonapse/testing/vectors/lenient.jsonl",
        f"cosmonapse-{version}.dist-info/licenses/LICENSE",
    ):
        check(member in names, f"the wheel holds {member}")
    check(not any(n.startswith("tests/") for n in names), "the wheel holds no tests")

    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    check("LICENSE" in members and "PKG-INFO" in members, "the sdist holds LICENSE and PKG-INFO")
    leaked = [m for m in members if m.startswith(("tests/", "examples/", "bench/"))]
    check(not leaked, "the sdist holds no tests")

    from cosmonapse.codec import decode_signal, encode_signal
    from cosmonapse.testing.vectors import valid_frames

    frames = list(valid_frames())
    decoded = [decode_signal(f) for f in frames]
    check(len(frames) > 10 and all(encode_signal(s) for s in decoded), f"{len(frames)} golden vectors decode")

    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "COSMONAPSE_LLM_BASE_URL")}
    demo = subprocess.run(
        [sys.executable, "-m", "cosmonapse.demo", "smoke test"], capture_output=True, text=True, timeout=120,
        env=env, check=False,
    )  # fmt: skip
    check(demo.returncode == 0 and "[FINAL]" in demo.stdout, f"the in-process demo answers: {demo.stdout!r}")

    cosmo = Path(sys.executable).with_name("cosmo")
    helped = subprocess.run([str(cosmo), "--help"], capture_output=True, text=True, timeout=60, check=False)
    check(helped.returncode == 0 and "synapse" in helped.stdout, "cosmo --help")
    told = subprocess.run([str(cosmo), "--version"], capture_output=True, text=True, timeout=60, check=False)
    check(version in told.stdout, f"cosmo --version says {version}")

    try:
        cosmonapse.PostgresEngram("postgresql://127.0.0.1/none")
    except ImportError as exc:
        check("cosmonapse[postgres]" in str(exc), "without psycopg, PostgresEngram names the postgres extra")
    else:
        check("psycopg" not in sys.modules, "psycopg is absent from a plain install")
    print("smoke: all passed")


if __name__ == "__main__":
    main()
