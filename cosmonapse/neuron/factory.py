"""``Neuron(source=..., **options)``: the one factory for every built-in source (seed 001).

It validates the options for the chosen source (a typo is an error naming
the accepted options, not a silently ignored keyword), resolves endpoints
and credentials (argument first, then the source's environment variable),
and returns a :class:`~.base.NeuronSource`: an async callable with the Neuron
contract, ``aclose()`` and ``async with``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .anthropic import ANTHROPIC_VERSION, AnthropicNeuron
from .base import NeuronSource, policy_from
from .errors import NeuronConfigError
from .http_app import HttpAppNeuron
from .httpclient import HttpClient
from .mcp_source import McpNeuron
from .ollama import OllamaNeuron
from .openai_compat import OpenAICompatNeuron
from .tools import ToolExecutor

__all__ = ["HF_ROUTER", "PRESETS", "SOURCES", "Neuron"]

HF_ROUTER = "https://router.huggingface.co"
_USER_AGENT = "cosmonapse/0.1"

#: Hosted OpenAI-compatible presets: (default endpoint, environment variable of the key).
PRESETS: dict[str, tuple[str, str]] = {
    "groq": ("https://api.groq.com/openai", "GROQ_API_KEY"),
    "openrouter": ("https://openrouter.ai/api", "OPENROUTER_API_KEY"),
    "together": ("https://api.together.xyz", "TOGETHER_API_KEY"),
    "mistral": ("https://api.mistral.ai", "MISTRAL_API_KEY"),
}


def _is_hf_host(endpoint: str) -> bool:
    host = httpx.URL(endpoint).host
    return host.endswith(("huggingface.co", "huggingface.cloud"))


def _key(api_key: str | None, env_var: str) -> str | None:
    return api_key if api_key is not None else os.environ.get(env_var) or None


def _http(
    source: str,
    *,
    timeout: float,
    connect_timeout: float,
    max_attempts: int,
    backoff: float,
    max_backoff: float,
    max_retry_after: float,
    headers: Mapping[str, str],
    secret: str | None,
    credential_hint: str | None,
    unreachable_hint: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HttpClient:
    policy = policy_from(
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_retry_after=max_retry_after,
    )
    return HttpClient(
        source,
        policy=policy,
        headers={"user-agent": _USER_AGENT, **headers},
        secrets=[secret],
        credential_hint=credential_hint,
        unreachable_hint=unreachable_hint,
        transport=transport,
    )


def _bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


# Options every HTTP source takes; the builders below list them explicitly so a
# typo is caught by signature binding.
def _huggingface(
    source: str,
    *,
    endpoint: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    use_chat_api: bool | None = None,
    use_completions_api: bool = False,
    max_new_tokens: int = 512,
    temperature: float | None = None,
    stop: list[str] | str | None = None,
    stream: bool = False,
    system: str | None = None,
    tools: Mapping[str, ToolExecutor] | None = None,
    tool_schemas: list[Any] | None = None,
    apply_intents: bool = False,
    teach_intents: bool = False,
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    max_retry_after: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NeuronSource:
    endpoint = endpoint or HF_ROUTER
    # HF_TOKEN only goes to Hugging Face hosts, never to an arbitrary endpoint.
    key = api_key if api_key is not None else (os.environ.get("HF_TOKEN") if _is_hf_host(endpoint) else None)
    if use_chat_api is None:
        use_chat_api = endpoint.rstrip("/") == HF_ROUTER
    http = _http(
        "huggingface",
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_retry_after=max_retry_after,
        headers=_bearer(key),
        secret=key,
        credential_hint="HF_TOKEN (or api_key=)",
        transport=transport,
    )
    return OpenAICompatNeuron(
        "huggingface",
        http,
        endpoint=endpoint,
        model=model,
        mode="auto",
        use_chat_api=use_chat_api,
        use_completions_api=use_completions_api,
        max_tokens=max_new_tokens,
        temperature=temperature,
        stop=stop,
        stream=stream,
        system=system,
        tools=tools,
        tool_schemas=tool_schemas,
        apply_intents=apply_intents,
        teach_intents=teach_intents,
    )


def _openai_like(
    source: str,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    max_tokens: int | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    stop: list[str] | str | None = None,
    stream: bool = False,
    system: str | None = None,
    tools: Mapping[str, ToolExecutor] | None = None,
    tool_schemas: list[Any] | None = None,
    apply_intents: bool = False,
    teach_intents: bool | None = None,
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    max_retry_after: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NeuronSource:
    if source == "openai":
        default_endpoint, env_var = "https://api.openai.com/v1", "OPENAI_API_KEY"
        if not model:
            raise NeuronConfigError("Neuron(source='openai') needs model=")
        tokens = max_tokens if max_tokens is not None else max_new_tokens
        teach = True if teach_intents is None else teach_intents
    else:
        default_endpoint, env_var = PRESETS[source]
        tokens = max_tokens if max_tokens is not None else (max_new_tokens or 512)
        teach = bool(teach_intents)
    key = _key(api_key, env_var)
    if not key and endpoint is None:
        raise NeuronConfigError(f"Neuron(source={source!r}) needs an API key: pass api_key= or set {env_var}")
    http = _http(
        source,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_retry_after=max_retry_after,
        headers=_bearer(key),
        secret=key,
        credential_hint=f"{env_var} (or api_key=)",
        transport=transport,
    )
    return OpenAICompatNeuron(
        source,
        http,
        endpoint=endpoint or default_endpoint,
        model=model,
        mode="chat",
        max_tokens=tokens,
        temperature=temperature,
        stop=stop,
        stream=stream,
        system=system,
        tools=tools,
        tool_schemas=tool_schemas,
        apply_intents=apply_intents,
        teach_intents=teach,
    )


def _anthropic(
    source: str,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    max_tokens: int = 1024,
    temperature: float | None = None,
    stop: list[str] | str | None = None,
    stream: bool = False,
    system: str | None = None,
    tools: Mapping[str, ToolExecutor] | None = None,
    tool_schemas: list[Any] | None = None,
    apply_intents: bool = False,
    teach_intents: bool = True,
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    max_retry_after: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NeuronSource:
    if not model:
        raise NeuronConfigError("Neuron(source='anthropic') needs model=")
    key = _key(api_key, "ANTHROPIC_API_KEY")
    if not key and endpoint is None:
        raise NeuronConfigError(
            "Neuron(source='anthropic') needs an API key: pass api_key= or set ANTHROPIC_API_KEY"
        )
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if key:
        headers["x-api-key"] = key
    http = _http(
        "anthropic",
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_retry_after=max_retry_after,
        headers=headers,
        secret=key,
        credential_hint="ANTHROPIC_API_KEY (or api_key=)",
        transport=transport,
    )
    return AnthropicNeuron(
        "anthropic",
        http,
        endpoint=endpoint or "https://api.anthropic.com",
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        stop=stop,
        stream=stream,
        system=system,
        tools=tools,
        tool_schemas=tool_schemas,
        apply_intents=apply_intents,
        teach_intents=teach_intents,
    )


def _ollama(
    source: str,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    max_new_tokens: int | None = None,
    options: dict[str, Any] | None = None,
    stream: bool = False,
    system: str | None = None,
    tools: Mapping[str, ToolExecutor] | None = None,
    tool_schemas: list[Any] | None = None,
    apply_intents: bool = False,
    teach_intents: bool = True,
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    max_retry_after: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NeuronSource:
    if not model:
        raise NeuronConfigError("Neuron(source='ollama') needs model= (e.g. model='llama3')")
    http = _http(
        "ollama",
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_retry_after=max_retry_after,
        headers=_bearer(api_key),
        secret=api_key,
        credential_hint="api_key=",
        unreachable_hint="is `ollama serve` running?",
        transport=transport,
    )
    return OllamaNeuron(
        "ollama",
        http,
        endpoint=endpoint or "http://localhost:11434",
        model=model,
        temperature=temperature,
        max_tokens=max_tokens if max_tokens is not None else max_new_tokens,
        options=options,
        stream=stream,
        system=system,
        tools=tools,
        tool_schemas=tool_schemas,
        apply_intents=apply_intents,
        teach_intents=teach_intents,
    )


def _http_source(
    source: str,
    *,
    url: str | None = None,
    app: Callable[..., Any] | None = None,
    method: str = "POST",
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 8.0,
    max_retry_after: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NeuronSource:
    if (url is None) == (app is None):
        raise NeuronConfigError(f"Neuron(source={source!r}) needs exactly one of url= (HTTP) or app= (WSGI)")
    http = _http(
        source,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        max_retry_after=max_retry_after,
        headers={**_bearer(api_key), **(headers or {})},
        secret=api_key,
        credential_hint="api_key=",
        transport=transport,
    )
    return HttpAppNeuron(source, http, url=url, app=app, method=method)


def _mcp(source: str, **kw: Any) -> NeuronSource:
    return McpNeuron(source, **kw)


_BUILDERS: dict[str, Callable[..., NeuronSource]] = {
    "huggingface": _huggingface,
    "hf": _huggingface,
    "openai": _openai_like,
    **dict.fromkeys(PRESETS, _openai_like),
    "anthropic": _anthropic,
    "ollama": _ollama,
    "http": _http_source,
    "flask": _http_source,
    "wsgi": _http_source,
    "mcp": _mcp,
}

#: Every accepted ``source`` name.
SOURCES = tuple(sorted(_BUILDERS))


def _check_options(source: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    target = McpNeuron.__init__ if builder is _mcp else builder
    params = inspect.signature(target).parameters
    accepted = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise NeuronConfigError(
            f"Neuron(source={source!r}) does not take {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(accepted)}"
        )


def Neuron(source: str, **options: Any) -> NeuronSource:
    """Build a Neuron for *source* (see ``docs/neurons/``): ``async (input, context) -> dict``.

    Named like a class because the seeds call it so; it is a factory function.
    """
    key = source.lower() if isinstance(source, str) else source
    builder = _BUILDERS.get(key)
    if builder is None:
        raise NeuronConfigError(f"unknown Neuron source {source!r}; known: {', '.join(SOURCES)}")
    _check_options(key, builder, options)
    return builder(key, **options)
