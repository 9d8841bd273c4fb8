"""Shared fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on trio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nats_util import NatsServer, nats_server_binary


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The anyio backend a test runs on (the anyio pytest plugin reads this fixture)."""
    return request.param


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str | None]:
    """One nats-server for the tests that run on every bus (None when it is not installed)."""
    if nats_server_binary() is None:
        yield None
        return
    with NatsServer() as srv:
        yield srv.url
