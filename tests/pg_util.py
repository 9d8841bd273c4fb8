"""A real PostgreSQL for the tests, started by the tests themselves.

Debian's ``postgresql`` package (``.ci/run`` installs it) provides ``initdb``
and ``pg_ctl``; the session gets one server in a temporary directory, on a
free loopback port, and every test that asks for ``postgres_dsn`` gets a fresh
schema on it (its dsn sets ``search_path``), dropped afterwards.  PostgreSQL refuses to run as root, so
when we are root (CI is) the server runs as ``nobody``.  Set
``COSMONAPSE_TEST_POSTGRES_DSN`` to an admin dsn to use a server of your own.

No server: the tests that need one are skipped on a developer's machine, and
fail loudly in CI (``CI=true``), so a missing package can never pass silently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_util import free_port

__all__ = ["PostgresServer", "no_server", "postgres_bindir"]

#: pg_ctl's own wait for start and stop (seconds).
PG_CTL_TIMEOUT_S = 60


def postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then Debian's versioned dirs."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def no_server(reason: str) -> None:
    """Skip, or in CI fail: CI must never pass without having run the Postgres tests."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"no PostgreSQL for the tests in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason}")


class PostgresServer:
    """One throwaway server: ``initdb`` + ``pg_ctl`` in a temp dir, as an unprivileged user when root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cosmonapse-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=PG_CTL_TIMEOUT_S + 30,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            check=False,
            **self._as,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(PG_CTL_TIMEOUT_S), "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT_S), "stop")

    def restart(self) -> None:
        """Stop and start on the same port and data: every client connection is cut."""
        self.stop()
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """A dsn whose tables live in a new, empty schema (its ``search_path``); dropped afterwards.

    A schema per test is as isolated as a database for our tables and ten times
    faster to make; it is also how users give each engram its own tables.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, options=f"-csearch_path={name}")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@contextlib.contextmanager
def session_server() -> Iterator[tuple[str, PostgresServer | None]]:
    """(admin dsn, the server we started or None) for a test session."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        no_server("psycopg is not installed (pip install -e '.[test]')")
    external = os.environ.get("COSMONAPSE_TEST_POSTGRES_DSN")
    if external:
        yield external, None
        return
    bindir = postgres_bindir()
    if bindir is None:
        no_server("initdb/pg_ctl not found (apt-get install postgresql)")
        raise AssertionError("unreachable")
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception as exc:
        server.close()
        no_server(f"could not start one: {exc}")
    try:
        yield server.admin_dsn, server
    finally:
        server.close()
