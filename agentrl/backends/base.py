"""The contract every inference backend meets: token ids in, token ids + logprobs out.

Backends never see text: the rollout engine owns tokenization (``agentrl.rollout.tokens``), so a
trajectory's token ids are exactly what the model produced, with no re-tokenization anywhere.

Logprob convention: ``Generation.logprobs[i]`` is ``log softmax(logits)[token_ids[i]]`` of the
*unscaled* distribution (temperature 1, no top-p), i.e. what the trainer's forward pass computes
for the same weights. At temperature 1 without top-p this is also the sampling distribution.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """Settings for one generation request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=1.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=64, ge=1, description="Generated-token budget.")
    stop: tuple[str, ...] = Field(default=(), description="Stop strings (kept in the output).")
    seed: int | None = Field(default=None, description="Per-request sampling seed.")


class Generation(BaseModel):
    """What a backend returns for one request."""

    model_config = ConfigDict(extra="forbid")

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length", "abort"]
    weight_version: int = Field(default=0, description="Weights that produced these tokens.")


class BackendError(RuntimeError):
    """A backend failed to serve a request (retryable unless stated otherwise)."""


@runtime_checkable
class InferenceBackend(Protocol):
    """Generates continuations of token-id prompts; a fake needs no inheritance."""

    weight_version: int

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Sample one continuation of ``prompt_ids``."""
        ...

    async def update_weights(self, weights: Any, version: int | None = None) -> None:
        """Load new policy weights (a state dict or a folder path); bump ``weight_version``."""
        ...

    async def health(self) -> bool:
        """True when the backend can serve requests."""
        ...

    async def close(self) -> None:
        """Release resources (threads, HTTP clients, server processes it started)."""
        ...
