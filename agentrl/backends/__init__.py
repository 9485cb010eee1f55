"""Inference backends behind one protocol (``InferenceBackend``); heavy imports stay lazy.

``make_backend("hf", ...)`` builds the in-process transformers backend; ``"vllm"`` and
``"sglang"`` talk to real servers over HTTP on loopback.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from agentrl.backends.base import (
    BackendError,
    Generation,
    InferenceBackend,
    SamplingParams,
)
from agentrl.registry import Registry

__all__ = [
    "BACKENDS",
    "BackendError",
    "Generation",
    "InferenceBackend",
    "SamplingParams",
    "make_backend",
]

# name -> "module:Class", imported only when asked for
BACKENDS: Registry[str] = Registry("backend")
BACKENDS.register("hf", "agentrl.backends.hf:HFBackend")
BACKENDS.register("vllm", "agentrl.backends.vllm:VLLMBackend")
BACKENDS.register("sglang", "agentrl.backends.sglang:SGLangBackend")


def make_backend(name: str, **options: Any) -> InferenceBackend:
    """Instantiate the backend registered as ``name`` with its keyword options."""
    module, cls = BACKENDS.get(name).split(":")
    return getattr(import_module(module), cls)(**options)
