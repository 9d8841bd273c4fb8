"""One pooled ``httpx.AsyncClient`` per Neuron, with timeouts, retries and clear errors.

Why one place: every HTTP source needs the same things — a connection pool
reused across TASKs (created lazily, released by ``aclose()``), connect/read
limits, bounded retries with backoff on 429 (honouring ``Retry-After``), 5xx
and connection failures, and error messages that name the source, the URL
and the limit but never the credential.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import attrs
import httpx
import orjson

from ..context import current_task
from ..telemetry import log_extra
from .errors import (
    NeuronAuthError,
    NeuronConnectionError,
    NeuronHTTPError,
    NeuronResponseError,
    NeuronStreamError,
    NeuronTimeout,
)
from .secrets import Secrets

__all__ = ["HttpClient", "HttpPolicy", "parse_retry_after", "refuse_cookies"]

log: logging.Logger = logging.getLogger("cosmonapse.neuron.http")

_EXCERPT = 300


@attrs.frozen
class HttpPolicy:
    """Limits and retry rules for one Neuron's HTTP traffic.

    ``timeout`` is the read limit: the longest wait for the next bytes of an
    answer (for a stream, between two chunks), so slow generations are fine
    as long as tokens keep coming.
    """

    timeout: float = 120.0
    connect_timeout: float = 10.0
    max_attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter before attempt ``attempt + 1``."""
        delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return delay * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def refuse_cookies(client: httpx.Client | httpx.AsyncClient) -> None:
    """Make *client* drop every cookie: one TASK's server session must not leak into the next."""
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class HttpClient:
    """The HTTP side of one Neuron: a lazily created, pooled client and its policy.

    ``secrets`` are values that must never leak (API keys); every message this
    class produces is passed through :meth:`redact`.
    """

    def __init__(
        self,
        source: str,
        *,
        policy: HttpPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str | None] = (),
        credential_hint: str | None = None,
        unreachable_hint: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.source = source
        self.policy: HttpPolicy = policy or HttpPolicy()
        self._headers = dict(headers or {})
        self.secrets: Secrets = Secrets(secrets)
        self.credential_hint = credential_hint
        self.unreachable_hint = unreachable_hint
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<HttpClient {self.source} open={self._client is not None}>"

    @property
    def has_credential(self) -> bool:
        return bool(self.secrets)

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    def safe_url(self, url: httpx.URL | str) -> str:
        """The URL as shown in messages: no user-info, no secrets."""
        u = httpx.URL(str(url))
        if u.userinfo:
            u = u.copy_with(username=None, password=None)
        return self.redact(str(u))

    def client(self) -> httpx.AsyncClient:
        """The pooled client, created on first use (and again after ``aclose`` or a fork).

        A process forked after the pool was used must not share its sockets with the
        parent: the child drops the inherited client (without closing the parent's
        connections) and opens its own.
        """
        if self._pid != os.getpid():
            self._client = None
            self._pid = os.getpid()
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=self.policy.httpx_timeout(),
                transport=self._transport,
                follow_redirects=True,
            )
            refuse_cookies(self._client)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- requests ---------------------------------------------------------------------------------

    async def post_json(self, url: str, body: Any, *, headers: Mapping[str, str] | None = None) -> Any:
        """POST *body* as JSON and return the decoded JSON answer."""
        async with self.open("POST", url, json=body, headers=headers) as resp:
            with self.reading(url):
                content = await resp.aread()
            return self.decode_json(url, resp, content)

    def decode_json(self, url: str, resp: httpx.Response, content: bytes) -> Any:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            ctype = resp.headers.get("content-type", "?")
            raise NeuronResponseError(
                f"{self.source} at {self.safe_url(url)} returned a body that is not JSON "
                f"(HTTP {resp.status_code}, content-type {ctype}): {self._excerpt(content)!r}"
            ) from None

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        raise_for_status: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request (retrying per the policy) and yield the streaming response.

        Retries happen only before the body is handed to the caller, so a
        caller that has started consuming a stream is never replayed.
        """
        client = self.client()
        policy = self.policy
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= policy.max_attempts
            request = client.build_request(
                method, url, json=json, content=content, data=data, params=params, headers=headers
            )
            try:
                resp = await client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and not last:
                    await self._pause(policy.backoff_delay(attempt), attempt, url, "connect timeout")
                    continue
                raise self._timeout_error(exc, url, attempt) from None
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if not last:
                    await self._pause(policy.backoff_delay(attempt), attempt, url, type(exc).__name__)
                    continue
                hint = f" ({self.unreachable_hint})" if self.unreachable_hint else ""
                raise NeuronConnectionError(
                    f"{self.source}: could not reach {self.safe_url(url)} after {attempt} attempt(s): "
                    f"{self.redact(str(exc) or type(exc).__name__)}{hint}"
                ) from None
            status = resp.status_code
            if _retryable_status(status) and not last:
                delay = self._retry_delay(resp, attempt)
                await resp.aclose()
                if delay is None:
                    # Retry-After beyond what we are allowed to wait: report now.
                    retry_after = resp.headers.get("retry-after")
                    raise NeuronHTTPError(
                        f"{self.source} answered HTTP {status} for {self.safe_url(url)} and asks to retry "
                        f"after {retry_after!r}, more than max_retry_after={policy.max_retry_after:g} s",
                        status,
                    )
                await self._pause(delay, attempt, url, f"HTTP {status}")
                continue
            if status in (401, 403) and (raise_for_status or self.has_credential):
                body = await self._read_excerpt(resp)
                raise NeuronAuthError(self._auth_message(status, body))
            if status >= 400 and (raise_for_status or _retryable_status(status)):
                body = await self._read_excerpt(resp)
                after = f" after {attempt} attempt(s)" if attempt > 1 else ""
                raise NeuronHTTPError(
                    f"{self.source} returned HTTP {status} for {method} {self.safe_url(url)}{after}: {body}",
                    status,
                )
            break
        try:
            yield resp
        finally:
            await resp.aclose()

    @contextmanager
    def reading(self, url: str, *, what: str = "the response") -> Iterator[None]:
        """Map httpx failures while a body is read to errors naming the URL and the limit."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise self._timeout_error(exc, url, 1, what=what) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamError) as exc:
            raise NeuronStreamError(
                f"{self.source}: the connection to {self.safe_url(url)} dropped while reading {what}: "
                f"{self.redact(str(exc) or type(exc).__name__)}"
            ) from None

    # -- helpers ----------------------------------------------------------------------------------

    def _retry_delay(self, resp: httpx.Response, attempt: int) -> float | None:
        """Seconds before the next attempt; ``None`` when Retry-After is beyond our limit."""
        if resp.status_code in (429, 503):
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if retry_after is not None:
                return retry_after if retry_after <= self.policy.max_retry_after else None
        return self.policy.backoff_delay(attempt)

    async def _pause(self, delay: float, attempt: int, url: str, why: str) -> None:
        log.warning(
            "%s: %s from %s; retrying in %.2f s (attempt %d of %d)",
            self.source,
            why,
            self.safe_url(url),
            delay,
            attempt + 1,
            self.policy.max_attempts,
            extra=log_extra(current_task.get()),  # the TASK this call serves, when there is one
        )
        await anyio.sleep(delay)

    def _timeout_error(
        self, exc: httpx.TimeoutException, url: str, attempt: int, what: str = ""
    ) -> NeuronTimeout:
        p = self.policy
        where = self.safe_url(url)
        tries = f" ({attempt} attempts)" if attempt > 1 else ""
        if isinstance(exc, httpx.ConnectTimeout):
            limit = f"connect_timeout={p.connect_timeout:g} s"
            return NeuronTimeout(f"{self.source}: connecting to {where} took longer than {limit}{tries}")
        if isinstance(exc, httpx.ReadTimeout):
            doing = f"while reading {what}" if what else "waiting for an answer"
            return NeuronTimeout(
                f"{self.source}: {where} sent nothing for timeout={p.timeout:g} s {doing} (read timeout)"
            )
        if isinstance(exc, httpx.WriteTimeout):
            return NeuronTimeout(
                f"{self.source}: sending the request to {where} exceeded timeout={p.timeout:g} s"
            )
        return NeuronTimeout(f"{self.source}: no free connection to {where} within timeout={p.timeout:g} s")

    def _auth_message(self, status: int, body: str) -> str:
        hint = self.credential_hint or "api_key="
        detail = f" Server said: {body}" if body else ""
        if self.has_credential:
            return f"{self.source} rejected the API key (HTTP {status}): check {hint}.{detail}"
        return f"{self.source} needs an API key (HTTP {status}) and none was given: set {hint}.{detail}"

    async def _read_excerpt(self, resp: httpx.Response) -> str:
        try:
            with anyio.fail_after(self.policy.timeout):
                content = await resp.aread()
        except (httpx.HTTPError, TimeoutError):
            content = b""
        finally:
            await resp.aclose()
        return self._excerpt(content)

    def _excerpt(self, content: bytes) -> str:
        # Redact before cutting, so a key split by the cut cannot leak its first half.
        text = self.redact(content.decode("utf-8", "replace").strip())
        if len(text) > _EXCERPT:
            text = text[:_EXCERPT] + "…"
        return text
