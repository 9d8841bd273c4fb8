"""Shared fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on trio; a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nats_util import NatsServer, nats_server_binary
from pg_util import PostgresServer, fresh_database, session_server


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The anyio backend a test runs on (the anyio pytest plugin reads this fixture)."""
    return request.param


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, PostgresServer | None]]:
    """A real PostgreSQL for the session (see pg_util): (admin dsn, the server we started, if any)."""
    with session_server() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: tuple[str, PostgresServer | None]) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL, dropped after the test."""
    with fresh_database(postgres_server[0]) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str | None]:
    """One nats-server for the tests that run on every bus (None when it is not installed)."""
    if nats_server_binary() is None:
        yield None
        return
    with NatsServer() as srv:
        yield srv.url
