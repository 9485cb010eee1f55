"""Core data types: messages, turns, trajectories, groups and reward vectors.

Everything here is a validated pydantic v2 model that round-trips through JSON lines without
loss (floats are written with ``repr`` precision, so ``load(dump(x)) == x``).

Token bookkeeping contract (see ``agentrl.rollout.tokens``): ``Trajectory.token_ids`` holds the
whole episode (prompt, then every generated and every feedback token, in order);
``loss_mask[i] == 1`` exactly for tokens the model generated; ``rollout_logprobs[i]`` is the
backend's log-probability of ``token_ids[i]`` where the mask is 1 and ``0.0`` elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "error", "abort"]
Status = Literal["ok", "failed", "truncated"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False, ser_json_inf_nan="constants")


class ToolCall(_Model):
    """One function call the model asked for."""

    name: str = Field(description="Name of the tool to call.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")
    id: str | None = Field(default=None, description="Call id, when the format carries one.")


class Message(_Model):
    """A chat message in the OpenAI/Hugging Face format that chat templates accept."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="Calls the assistant made in this message (assistant only)."
    )
    name: str | None = Field(default=None, description="Tool name, for role 'tool'.")

    @model_validator(mode="after")
    def _tool_calls_only_for_assistant(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls: only assistant messages carry them, not {self.role!r}")
        return self

    def to_template(self) -> dict[str, Any]:
        """The plain dict that ``tokenizer.apply_chat_template`` expects."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.name is not None:
            out["name"] = self.name
        return out


class RewardVector(_Model):
    """Named reward components with weights; ``scalar()`` is their weighted sum.

    A component absent from ``weights`` has weight 0: a metric that is logged and can get its own
    advantage share, but does not move the scalar reward.
    """

    components: dict[str, float] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("components", "weights")
    @classmethod
    def _finite(cls, v: dict[str, float], info: Any) -> dict[str, float]:
        for k, x in v.items():
            if not math.isfinite(x):
                raise ValueError(f"{info.field_name}[{k!r}] must be finite, got {x}")
        return v

    def scalar(self, weights: dict[str, float] | None = None) -> float:
        """Weighted sum of the components (``weights`` overrides the stored ones)."""
        w = self.weights if weights is None else weights
        return float(sum(w.get(k, 0.0) * c for k, c in self.components.items()))

    def __getitem__(self, key: str) -> float:
        return self.components[key]


class Turn(_Model):
    """One model action and the environment's answer to it."""

    action: str = Field(description="Decoded text the model generated this turn.")
    token_ids: list[int] = Field(default_factory=list, description="Generated token ids.")
    logprobs: list[float] = Field(default_factory=list, description="Rollout logprob per id.")
    feedback: str = Field(default="", description="Environment feedback / tool results text.")
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reward_components: dict[str, float] = Field(default_factory=dict)
    reward: float = 0.0
    finish_reason: FinishReason = "stop"
    weight_version: int = Field(default=0, description="Policy version that generated the turn.")

    @model_validator(mode="after")
    def _aligned(self) -> Turn:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(
                f"logprobs: length {len(self.logprobs)} != token_ids length {len(self.token_ids)}"
            )
        return self


class Trajectory(_Model):
    """A whole episode as token ids with a loss mask, plus its turns and rewards."""

    env_id: str = ""
    seed: int | None = None
    group_id: str = ""
    prompt_ids: list[int] = Field(default_factory=list, description="Rendered prompt token ids.")
    token_ids: list[int] = Field(default_factory=list, description="Prompt + all later tokens.")
    loss_mask: list[int] = Field(default_factory=list, description="1 = model-generated token.")
    rollout_logprobs: list[float] = Field(default_factory=list, description="0.0 where mask is 0.")
    messages: list[Message] = Field(default_factory=list, description="The chat, for reading.")
    turns: list[Turn] = Field(default_factory=list)
    reward_components: dict[str, float] = Field(default_factory=dict, description="Episode sums.")
    reward_weights: dict[str, float] = Field(default_factory=dict)
    reward: float = 0.0
    status: Status = "ok"
    error: str | None = None
    weight_version: int = Field(default=0, description="Oldest policy version in the episode.")
    branch_points: list[int] = Field(
        default_factory=list,
        description="Token positions where a tree rollout branched (shared prefix ends).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aligned(self) -> Trajectory:
        n = len(self.token_ids)
        if len(self.loss_mask) != n or len(self.rollout_logprobs) != n:
            raise ValueError(
                f"loss_mask ({len(self.loss_mask)}) and rollout_logprobs "
                f"({len(self.rollout_logprobs)}) must match token_ids ({n})"
            )
        if self.token_ids[: len(self.prompt_ids)] != self.prompt_ids:
            raise ValueError("token_ids must start with prompt_ids")
        if any(m not in (0, 1) for m in self.loss_mask):
            raise ValueError("loss_mask: values must be 0 or 1")
        if self.status == "failed" and not self.error:
            raise ValueError("error: a failed trajectory must say why")
        return self

    @property
    def reward_vector(self) -> RewardVector:
        return RewardVector(components=self.reward_components, weights=self.reward_weights)

    @property
    def num_generated(self) -> int:
        return sum(self.loss_mask)

    @property
    def completion_ids(self) -> list[int]:
        """Token ids after the prompt (generated and feedback tokens)."""
        return self.token_ids[len(self.prompt_ids) :]


class TrajectoryGroup(_Model):
    """Siblings that share a prompt (episode level) or a tree node (turn level)."""

    group_id: str
    trajectories: list[Trajectory] = Field(default_factory=list)
    level: Literal["episode", "turn"] = Field(
        default="episode", description="'episode': root group; 'turn': siblings at a tree node."
    )
    prefix_length: int = Field(default=0, ge=0, description="Tokens the siblings share.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trajectories)

    def __iter__(self) -> Iterator[Trajectory]:  # type: ignore[override]
        return iter(self.trajectories)

    @property
    def rewards(self) -> list[float]:
        return [t.reward for t in self.trajectories]


SUCCESS_COMPONENTS = ("solved", "correct", "all_passed", "success")


def success_of(components: dict[str, float], name: str | None = None) -> float:
    """1.0 when the episode succeeded: its ``name`` component (default: the first of
    solved/correct/all_passed/success it reports) is positive. ``terminated`` is no success
    signal: falling into a hole or losing a game also ends an episode."""
    key = name or next((k for k in SUCCESS_COMPONENTS if k in components), None)
    return float(components.get(key, 0.0) > 0) if key else 0.0


M = TypeVar("M", bound=BaseModel)


def dump_jsonl(items: Iterable[BaseModel], path: str | Path) -> int:
    """Write models as JSON lines (atomically); return how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(item.model_dump_json() + "\n")
            n += 1
    tmp.replace(path)
    return n


def load_jsonl(path: str | Path, cls: type[M]) -> list[M]:
    """Read JSON lines written by :func:`dump_jsonl` back into ``cls`` objects."""
    out: list[M] = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(cls.model_validate_json(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: not a valid {cls.__name__}: {e}") from e
    return out


def to_jsonable(obj: BaseModel) -> dict[str, Any]:
    return json.loads(obj.model_dump_json())
