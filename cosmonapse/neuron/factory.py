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

import attrs
import httpx

from .anthropic import ANTHROPIC_VERSION, AnthropicNeuron
from .base import NeuronSource
from .errors import NeuronConfigError
from .http_app import HttpAppNeuron
from .httpclient import HttpClient, HttpPolicy
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


@attrs.frozen
class HttpOptions:
    """The options every HTTP source takes: its policy (``HttpPolicy`` fields) and a transport."""

    policy: HttpPolicy = attrs.field(factory=HttpPolicy)
    transport: httpx.AsyncBaseTransport | None = None

    @classmethod
    def take_from(cls, options: dict[str, Any]) -> HttpOptions:
        """Pop the HTTP options out of *options* (what is left goes to the source)."""
        policy = {name: options.pop(name) for name in _POLICY_FIELDS if name in options}
        return cls(HttpPolicy(**policy), options.pop("transport", None))


_POLICY_FIELDS = tuple(f.name for f in attrs.fields(HttpPolicy))
#: Options every HTTP source accepts besides its own.
HTTP_OPTION_NAMES = (*_POLICY_FIELDS, "transport")


def _http(
    source: str,
    options: HttpOptions,
    *,
    headers: Mapping[str, str],
    secret: str | None,
    credential_hint: str | None,
    unreachable_hint: str | None = None,
) -> HttpClient:
    return HttpClient(
        source,
        policy=options.policy,
        headers={"user-agent": _USER_AGENT, **headers},
        secrets=[secret],
        credential_hint=credential_hint,
        unreachable_hint=unreachable_hint,
        transport=options.transport,
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
    http_options: HttpOptions,
) -> NeuronSource:
    endpoint = endpoint or HF_ROUTER
    # HF_TOKEN only goes to Hugging Face hosts, never to an arbitrary endpoint.
    key = api_key if api_key is not None else (os.environ.get("HF_TOKEN") if _is_hf_host(endpoint) else None)
    if use_chat_api is None:
        use_chat_api = endpoint.rstrip("/") == HF_ROUTER
    http = _http(
        "huggingface",
        http_options,
        headers=_bearer(key),
        secret=key,
        credential_hint="HF_TOKEN (or api_key=)",
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
    http_options: HttpOptions,
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
        http_options,
        headers=_bearer(key),
        secret=key,
        credential_hint=f"{env_var} (or api_key=)",
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
    http_options: HttpOptions,
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
        http_options,
        headers=headers,
        secret=key,
        credential_hint="ANTHROPIC_API_KEY (or api_key=)",
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
    http_options: HttpOptions,
) -> NeuronSource:
    if not model:
        raise NeuronConfigError("Neuron(source='ollama') needs model= (e.g. model='llama3')")
    http = _http(
        "ollama",
        http_options,
        headers=_bearer(api_key),
        secret=api_key,
        credential_hint="api_key=",
        unreachable_hint="is `ollama serve` running?",
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
    http_options: HttpOptions,
) -> NeuronSource:
    if (url is None) == (app is None):
        raise NeuronConfigError(f"Neuron(source={source!r}) needs exactly one of url= (HTTP) or app= (WSGI)")
    http = _http(
        source,
        http_options,
        headers={**_bearer(api_key), **(headers or {})},
        secret=api_key,
        credential_hint="api_key=",
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


def _accepted(builder: Callable[..., Any]) -> list[str]:
    """The option names a builder takes (its keyword-only parameters, HTTP options spelled out)."""
    target = McpNeuron.__init__ if builder is _mcp else builder
    params = inspect.signature(target).parameters
    names = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    if "http_options" in names:
        names.remove("http_options")
        names += HTTP_OPTION_NAMES
    return names


def _check_options(source: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    accepted = _accepted(builder)
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
    if builder is _mcp:
        return builder(key, **options)
    return builder(key, http_options=HttpOptions.take_from(options), **options)
