"""Text Generation Inference's native API: ``/generate`` and, streamed, ``/generate_stream``.

Used by the ``huggingface`` source for a plain prompt when neither the chat
nor the completions API is asked for (a local TGI server, say).  TGI has no
system role, so a system prompt is put in front of the text.
"""

from __future__ import annotations

from typing import Any

from .base import Exchange, Reply, ShapeError, join_url
from .prompt import Prompt

__all__ = ["TgiStream", "decode_tgi", "tgi_exchange"]


def decode_tgi(raw: Any) -> Reply:
    """``generated_text`` of the object, or of the first element of a list answer."""
    item = raw[0] if isinstance(raw, list) and raw else raw
    if not isinstance(item, dict):
        raise ShapeError("the answer has no generated_text")
    if item.get("error"):
        raise ShapeError(f"the server reported an error: {item['error']}")
    text = item.get("generated_text")
    if not isinstance(text, str):
        raise ShapeError("the answer has no generated_text")
    return Reply(text=text, raw=raw)


class TgiStream:
    """Folds ``/generate_stream`` events: one ``token`` each, ``generated_text`` on the last."""

    def __init__(self) -> None:
        self.finished = False
        self._text: list[str] = []
        self._last: dict[str, Any] = {}

    def feed(self, item: Any) -> str:
        if not isinstance(item, dict):
            raise ShapeError("a stream event is not a JSON object")
        if item.get("error"):
            raise ShapeError(f"the server reported an error mid-stream: {item['error']}")
        self._last = item
        if item.get("generated_text") is not None:
            self.finished: bool = True
        token = item.get("token") or {}
        if token.get("special"):
            return ""
        text = token.get("text") or ""
        self._text.append(text)
        return text

    def reply(self) -> Reply:
        final = self._last.get("generated_text")
        text = final if isinstance(final, str) else "".join(self._text)
        raw = {"generated_text": text, "details": self._last.get("details"), "streamed": True}
        return Reply(text=text, raw=raw)


def tgi_exchange(
    endpoint: str,
    prompt: Prompt,
    *,
    stream: bool,
    max_new_tokens: int | None,
    temperature: float | None,
    stop: list[str] | None,
) -> Exchange:
    text = prompt.text or ""
    if prompt.system:
        text = f"{prompt.system}\n\n{text}"
    params: dict[str, Any] = {}
    if max_new_tokens is not None:
        params["max_new_tokens"] = max_new_tokens
    if temperature is not None:
        params["temperature"] = temperature
    if stop:
        params["stop"] = stop
    return Exchange(
        url=join_url(endpoint, "/generate_stream" if stream else "/generate"),
        body={"inputs": text, "parameters": params},
        decode=decode_tgi,
        stream="sse" if stream else None,
        state=TgiStream,
    )
