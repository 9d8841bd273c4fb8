"""``default_demo_neuron()``: an LLM Neuron from the environment, for demos and examples.

So the README demo can run with a real model when one is configured and
fall back to a local function otherwise, without the demo knowing providers.

* ``COSMONAPSE_LLM_BASE_URL`` — any OpenAI-compatible server (vLLM, LM Studio,
  llama.cpp, TGI, Ollama's ``/v1``); optional ``COSMONAPSE_LLM_MODEL`` and
  ``COSMONAPSE_LLM_API_KEY``.  Checked first: an explicit local server wins.
* else ``HF_TOKEN`` — the Hugging Face router with a small instruct model
  (``COSMONAPSE_LLM_MODEL`` overrides it).
* else ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import NeuronSource
from .factory import HF_ROUTER, Neuron

__all__ = ["DEFAULT_HF_MODEL", "default_demo_neuron"]

DEFAULT_HF_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def default_demo_neuron(env: Mapping[str, str] | None = None, **options: Any) -> NeuronSource | None:
    """An LLM Neuron configured from *env* (default ``os.environ``), or ``None`` when none is set.

    Extra *options* (``stream=True``, ``max_new_tokens=...``) go to ``Neuron(...)``.
    """
    env = os.environ if env is None else env
    model = env.get("COSMONAPSE_LLM_MODEL") or None
    base_url = env.get("COSMONAPSE_LLM_BASE_URL")
    if base_url:
        return Neuron(
            "huggingface",
            endpoint=base_url,
            model=model,
            api_key=env.get("COSMONAPSE_LLM_API_KEY") or None,
            use_chat_api=True,
            **{"max_new_tokens": 256, **options},
        )
    token = env.get("HF_TOKEN")
    if token:
        return Neuron(
            "huggingface",
            endpoint=HF_ROUTER,
            model=model or DEFAULT_HF_MODEL,
            api_key=token,
            use_chat_api=True,
            **{"max_new_tokens": 256, "temperature": 0.7, **options},
        )
    return None
