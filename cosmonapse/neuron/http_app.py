"""The ``http`` source (alias ``flask``/``wsgi``): any HTTP endpoint, or a WSGI app in-process.

With ``url=`` the TASK input is sent to that endpoint over the Neuron's
pooled client (retries and timeouts as for the LLM sources).  With
``app=`` (a Flask app or any WSGI callable) the request goes through
httpx's ``WSGITransport`` in-process; WSGI is blocking, so each call runs in
anyio's worker-thread pool and the event loop stays free.

Input: either request fields — ``method`` (default POST), ``path`` (relative
to the base; default the base itself), ``json``, ``data``, ``query``/``params``,
``headers`` — or, when none of those is present, the whole input is the JSON
body.  Output: ``{status, ok, json, response, headers, meta: {method, path}}``.
A 4xx answer is returned (``ok`` false); 401/403 raise when an ``api_key`` was
given; 5xx and 429 are retried (over HTTP) and then raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import attrs
import httpx
import orjson

from .base import NeuronSource, scrubbed
from .errors import NeuronError, NeuronHTTPError, NeuronInputError
from .httpclient import HttpClient, refuse_cookies

__all__ = ["HttpAppNeuron", "HttpRequest", "request_from_input"]

_REQUEST_KEYS = frozenset({"method", "path", "url", "json", "data", "query", "params", "headers"})
_WSGI_BASE = "http://wsgi.local"


@attrs.frozen
class HttpRequest:
    method: str
    path: str
    json: Any = None
    data: dict[str, Any] | None = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


def request_from_input(input: dict[str, Any], default_method: str = "POST") -> HttpRequest:
    """Build the request from the TASK input (request fields, else the input as JSON body)."""
    if not _REQUEST_KEYS & input.keys():
        return HttpRequest(method=default_method, path="", json=input)
    path = str(input.get("path") or input.get("url") or "")
    if "://" in path or path.startswith("//"):
        raise NeuronInputError("input.path must be a path relative to the Neuron's url, not an absolute URL")
    data = input.get("data")
    form = data if isinstance(data, dict) else None
    content = data.encode() if isinstance(data, str) else data if isinstance(data, bytes) else None
    params = input.get("query") or input.get("params")
    headers = input.get("headers")
    return HttpRequest(
        method=str(input.get("method") or default_method).upper(),
        path=path,
        json=input.get("json"),
        data=form,
        content=content,
        params=dict(params) if isinstance(params, dict) else None,
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else None,
    )


def _join(base: str, path: str) -> str:
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


def _output(resp: httpx.Response, content: bytes, req: HttpRequest) -> dict[str, Any]:
    text = content.decode(resp.encoding or "utf-8", "replace")
    parsed: Any = None
    if "json" in resp.headers.get("content-type", ""):
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            parsed = None
    return {
        "status": resp.status_code,
        "ok": resp.status_code < 400,
        "json": parsed,
        "response": text,
        "headers": dict(resp.headers),
        "meta": {"method": req.method, "path": req.path or "/"},
    }


class HttpAppNeuron(NeuronSource):
    """Sends each TASK to an HTTP endpoint (``url``) or an in-process WSGI ``app``."""

    def __init__(
        self,
        source: str,
        http: HttpClient,
        *,
        url: str | None = None,
        app: Callable[..., Any] | None = None,
        method: str = "POST",
    ) -> None:
        self.source = source
        self.http = http
        self.url = url
        self.app = app
        self.method: str = method.upper()
        self._wsgi: httpx.Client | None = None

    async def __call__(self, input: dict[str, Any], context: Any) -> dict[str, Any]:
        """One TASK; an endpoint that echoes the credential gets it scrubbed from output and errors."""
        return await scrubbed(self.http.secrets, self._answer(input))

    def scrub_secrets(self, value: Any) -> Any:
        return self.http.secrets.scrub(value)

    async def _answer(self, input: dict[str, Any]) -> dict[str, Any]:
        req = request_from_input(input, self.method)
        if self.app is not None:
            if self._wsgi is None:
                self._wsgi = httpx.Client(transport=httpx.WSGITransport(app=self.app), base_url=_WSGI_BASE)
                refuse_cookies(self._wsgi)
            return await anyio.to_thread.run_sync(self._call_wsgi, self._wsgi, req)
        assert self.url is not None
        target = _join(self.url, req.path)
        async with self.http.open(
            req.method,
            target,
            json=req.json,
            data=req.data,
            content=req.content,
            params=req.params,
            headers=req.headers,
            raise_for_status=False,
        ) as resp:
            with self.http.reading(target):
                content = await resp.aread()
        return _output(resp, content, req)

    def _call_wsgi(self, client: httpx.Client, req: HttpRequest) -> dict[str, Any]:
        try:
            resp = client.request(
                req.method,
                "/" + req.path.lstrip("/"),
                json=req.json,
                data=req.data,
                content=req.content,
                params=req.params,
                headers=req.headers,
            )
        except Exception as exc:
            text = self.http.redact(str(exc))
            raise NeuronError(f"{self.source}: the WSGI app raised {type(exc).__name__}: {text}") from None
        if resp.status_code >= 500:
            excerpt = self.http.redact(resp.text.strip())[:300]  # redacted before it is cut
            raise NeuronHTTPError(
                f"{self.source}: the WSGI app answered HTTP {resp.status_code} for {req.method} "
                f"/{req.path.lstrip('/')}: {excerpt}",
                resp.status_code,
            )
        return _output(resp, resp.content, req)

    async def aclose(self) -> None:
        wsgi, self._wsgi = self._wsgi, None
        if wsgi is not None:
            wsgi.close()
        await self.http.aclose()

    def __repr__(self) -> str:
        target = "wsgi app" if self.app is not None else self.http.safe_url(self.url or "")
        return f"<Neuron source={self.source!r} target={target}>"
