"""Fixtures of the rollout tests: a scripted fake backend and small misbehaving envs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import pytest

from agentrl.backends.base import BackendError, Generation, SamplingParams
from agentrl.env import StepResult, TextEnv


class ScriptedBackend:
    """Answers every request with the canonical tokens of ``reply(prompt_ids, params)``.

    ``fail_first``: how many calls raise ``BackendError`` before it starts answering.
    """

    def __init__(self, tokenizer: Any, reply: Callable[[list[int], SamplingParams], str] | None = None,
                 fail_first: int = 0, eos: bool = True) -> None:
        self.tokenizer = tokenizer
        self.reply = reply or (lambda ids, p: "50")
        self.fail_first = fail_first
        self.eos = eos
        self.weight_version = 0
        self.calls: list[tuple[list[int], SamplingParams]] = []

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        self.calls.append((list(prompt_ids), params))
        if self.fail_first > 0:
            self.fail_first -= 1
            raise BackendError("scripted failure")
        text = self.reply(prompt_ids, params)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: params.max_new_tokens]
        finish = "length"
        if self.eos and len(ids) < params.max_new_tokens:
            ids, finish = [*ids, self.tokenizer.eos_token_id], "stop"
        return Generation(token_ids=ids, logprobs=[-0.25] * len(ids), finish_reason=finish,
                          weight_version=self.weight_version)

    async def update_weights(self, weights: Any, version: int | None = None) -> None:
        self.weight_version = version if version is not None else self.weight_version + 1

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class Raising(TextEnv):
    """Raises on the second step."""

    reward_weights: ClassVar[dict[str, float]] = {"r": 1.0}

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        return "Say anything."

    def _score(self, action: str) -> StepResult:
        if self.turn >= 1:
            raise RuntimeError("env exploded on purpose")
        return StepResult("Again.", {"r": 0.5})


class Hanging(TextEnv):
    """Its 'tool' hangs for a long time on the first step when the seed is odd."""

    reward_weights: ClassVar[dict[str, float]] = {"r": 1.0}

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        self.slow = self.np_random.integers(0, 2) == 1
        return "Call the tool."

    def _score(self, action: str) -> StepResult:
        if self.slow:
            time.sleep(30)
        return StepResult("Done.", {"r": 1.0}, terminated=True)


class Echo(TextEnv):
    """Feedback repeats the action; tool messages when ``tools=True``; ends on 'stop'."""

    reward_weights: ClassVar[dict[str, float]] = {"r": 1.0, "len": 0.0}
    max_turns = 8

    def __init__(self, tools: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.tools = tools

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        return "Echo game."

    def tool_schemas(self) -> list[dict[str, Any]]:
        if not self.tools:
            return []
        return [{"type": "function", "function": {"name": "echo", "description": "Echo text.",
                 "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]

    def _score(self, action: str) -> StepResult:
        info = {}
        if self.tools:
            info["feedback_messages"] = [{"role": "tool", "content": f"echo: {action}", "name": "echo"}]
        done = "stop" in action
        return StepResult(f"You said {action}", {"r": float(done), "len": float(len(action))}, done, info)


TEST_ENVS = {"test/Raising-v0": Raising, "test/Hanging-v0": Hanging, "test/Echo-v0": Echo}
for _id, _cls in TEST_ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls, disable_env_checker=True)


@pytest.fixture
def scripted(tiny: tuple[Any, Any]) -> Callable[..., ScriptedBackend]:
    """Factory of scripted backends sharing the tiny model's tokenizer."""
    return lambda *a, **kw: ScriptedBackend(tiny[1], *a, **kw)
