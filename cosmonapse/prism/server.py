"""Run Prism: connect the bus, start the tap, serve the app with Hypercorn (asyncio or trio).

We bind the listening socket ourselves and hand Hypercorn its file descriptor, so port 0
works (tests, several Prisms) and the URL we print carries the real port.  The socket is
listening before the URL is printed, so a browser that opens it at once is queued, never
refused.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import sniffio

from ..synapse.connect import connect_synapse
from .fanout import DEFAULT_HISTORY, DEFAULT_PAGE_LIMIT, BusTap
from .guard import Guard, is_loopback, new_token

__all__ = ["PrismServer", "page_url", "redact_url"]

log: logging.Logger = logging.getLogger("cosmonapse.prism")


def redact_url(url: str) -> str:
    """*url* without credentials, query or fragment (tokens live there), for showing on the page."""
    scheme, _, rest = url.partition("://")
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    hosts = [part.rsplit("@", 1)[-1] for part in rest.split(",")]
    return f"{scheme}://{','.join(hosts)}"


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def page_url(host: str, port: int, token: str) -> str:
    """The URL to open: the page, with its session token."""
    return f"http://{_url_host(host)}:{port}/?token={token}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (*host*, *port*); ``OSError`` if the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class PrismServer:
    """One Prism: a bus URL and namespace fixed here, a socket, a token, the tap and the app."""

    def __init__(
        self,
        bus_url: str,
        namespace: str,
        *,
        host: str = "127.0.0.1",
        port: int = 7071,
        token: str | None = None,
        allowed_hosts: Iterable[str] = (),
        history: int = DEFAULT_HISTORY,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        interval: float = 0.05,
        goodbye_s: float = 2.0,
        trace_url: str | None = None,
    ) -> None:
        if not namespace or any(c in namespace for c in ".*> \t"):
            raise ValueError(f"namespace must be one subject token (no '.', '*', '>', spaces): {namespace!r}")
        self.bus_url = bus_url
        self.namespace = namespace
        self.host = host
        self.port = port
        self.token: str = token or new_token()
        self.allowed_hosts: list[str] = list(allowed_hosts)
        self.history = history
        self.page_limit = page_limit
        self.interval = interval
        self.goodbye_s = goodbye_s
        if trace_url is not None and (
            not trace_url.startswith(("http://", "https://")) or "{trace_id}" not in trace_url
        ):
            raise ValueError(f"trace_url must be an http(s) URL with {{trace_id}} in it, not {trace_url!r}")
        #: Where an OTel trace id links to (``{trace_id}`` replaced), e.g. a Jaeger trace page.
        self.trace_url: str | None = trace_url
        self.tap: BusTap | None = None
        self.url: str | None = None

    @property
    def exposed(self) -> bool:
        """True when the address is not loopback (the CLI then needs an explicit flag)."""
        return not is_loopback(self.host)

    async def serve(self, until: Callable[[], Awaitable[Any]], ready: Callable[[str], None]) -> None:
        """Serve until *until()* returns; *ready(url)* is called once the page can be opened."""
        from . import require_extra

        require_extra()
        from .app import create_app

        synapse = await connect_synapse(self.bus_url)
        try:
            tap = self.tap = BusTap(synapse, self.namespace, history=self.history, page_limit=self.page_limit)
            await tap.start()
            sock = bind_socket(self.host, self.port)
            port = sock.getsockname()[1]
            hosts = [*self.allowed_hosts]
            if self.host not in ("", "0.0.0.0", "::"):
                hosts.append(self.host)
            guard = Guard(self.token, port, hosts)
            info = {"namespace": self.namespace, "bus": redact_url(self.bus_url), "trace_url": self.trace_url}
            app = create_app(tap, guard, info, interval=self.interval)
            stopping = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_hypercorn, app, sock, stopping.wait)
                self.url = page_url(self.host, port, self.token)
                ready(self.url)
                await until()
                tap.close()  # pages get what is queued, then a 1001 close: they know Prism stopped
                with anyio.move_on_after(self.goodbye_s):
                    await tap.wait_no_pages()
                stopping.set()
        finally:
            await synapse.close()  # shields its own shutdown


async def _hypercorn(app: Any, sock: socket.socket, shutdown: Callable[[], Awaitable[Any]]) -> None:
    """Hypercorn on *sock*, under whichever event loop we run on."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("cosmonapse.prism.http")
    config.graceful_timeout = 2.0
    config.include_server_header = False
    config.websocket_ping_interval = 20.0
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as trio_serve

        await trio_serve(app, config, shutdown_trigger=shutdown)
    else:
        import asyncio

        from hypercorn.asyncio import serve as asyncio_serve

        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(_quiet_cancelled_connections)
        try:
            await asyncio_serve(app, config, shutdown_trigger=shutdown)
        finally:
            loop.set_exception_handler(previous)


def _quiet_cancelled_connections(loop: Any, context: dict[str, Any]) -> None:
    """Drop the one log line asyncio (3.11) writes per keep-alive connection Hypercorn cancels at shutdown.

    ``StreamReaderProtocol`` asks its cancelled connection task for an exception and logs
    the ``CancelledError`` it gets; nothing failed.  Everything else goes to the default handler.
    """
    import asyncio

    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)
