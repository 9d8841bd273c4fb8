"""The Starlette application: the page, its assets and the ``/ws`` data channel.

Routes:

* ``GET /?token=T``  the page (401 with a short explanation without the right token);
* ``GET /static/…``  the page's CSS and JavaScript, shipped in the wheel;
* ``WS /ws?token=T`` the data channel: a ``hello`` message, then batches of Signals.

Every request passes the Host check first; the data channel also needs the token and our
own Origin (see ``guard``).  Nothing a request carries chooses the bus or the namespace:
both were fixed on the command line.  Messages from the page are read (to notice it
leaving) and ignored.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .fanout import BusTap, encode_batch
from .guard import Guard

__all__ = ["SECURITY_HEADERS", "create_app"]

#: Sent with every HTTP response: no framing, no sniffing, no referrer (the URL has the token).
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

_DENIED_PAGE = """<!doctype html><meta charset="utf-8"><title>Prism</title>
<body style="font:15px system-ui;background:#0d1117;color:#c9d1d9;padding:3em">
<h1>Prism needs its session link</h1>
<p>Open the URL printed by <code>cosmo prism</code> (or <code>cosmo doppler --prism</code>):
it carries the session token, <code>/?token=…</code>.</p>"""


class HostGuardMiddleware:
    """Refuse requests whose Host header is not ours; add the security headers to responses."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if not self.guard.host_ok(host):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            else:
                response = PlainTextResponse("host not allowed", status_code=421)
                await response(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key.encode() not in present:
                        headers.append((key.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _index_html() -> str:
    static = resources.files(__name__.rpartition(".")[0]) / "static"
    return (static / "index.html").read_text(encoding="utf-8")


def create_app(tap: BusTap, guard: Guard, info: dict[str, Any], *, interval: float = 0.05) -> ASGIApp:
    """The Prism ASGI app for *tap*; *info* (namespace, bus URL without secrets) goes to each page."""
    index = _index_html()

    async def page(request: Request) -> Response:
        if not guard.token_ok(request.query_params.get("token")):
            return HTMLResponse(_DENIED_PAGE, status_code=401)
        return HTMLResponse(index)

    async def channel(ws: WebSocket) -> None:
        if not guard.token_ok(ws.query_params.get("token")):
            await ws.close(code=1008, reason="missing or wrong token")
            return
        if not guard.origin_ok(ws.headers.get("origin")):
            await ws.close(code=1008, reason="origin not allowed")
            return
        await ws.accept()
        feed = tap.open_page()
        hello = {"kind": "hello", **info, "history": len(feed)}
        try:
            await ws.send_text(orjson.dumps(hello).decode())
            async with anyio.create_task_group() as tg:

                async def pump() -> None:
                    try:
                        while True:
                            frames, dropped = await feed.take(interval)
                            await ws.send_text(encode_batch(frames, dropped))
                    except anyio.EndOfStream:
                        await ws.close(code=1001, reason="prism is shutting down")
                    tg.cancel_scope.cancel()

                async def drain() -> None:
                    try:
                        while True:
                            await ws.receive_text()  # the page says nothing we act on
                    except (WebSocketDisconnect, RuntimeError, KeyError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pump)
                tg.start_soon(drain)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass
        finally:
            tap.close_page(feed)

    static = StaticFiles(packages=[(__package__ or "cosmonapse.prism", "static")])
    app = Starlette(
        routes=[
            Route("/", page),
            WebSocketRoute("/ws", channel),
            Mount("/static", app=static, name="static"),
        ]
    )
    return HostGuardMiddleware(app, guard)
