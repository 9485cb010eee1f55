"""Validated settings of the rollout manager and the tasks it runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["RolloutConfig", "RolloutTask"]


class RolloutTask(BaseModel):
    """One prompt to roll out: an environment, its constructor kwargs and a reset seed."""

    model_config = ConfigDict(extra="forbid")

    env_id: str = Field(description="Registered environment id, e.g. 'agentrl/GuessNumber-v0'.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Kwargs for the env constructor.")
    seed: int | None = Field(default=0, description="Seed of env.reset (the task instance).")
    group_size: int = Field(default=4, ge=1, description="Trajectories per task (leaves of its tree).")
    group_id: str | None = Field(default=None, description="Group id; default '<env_id>:<seed>:<n>'.")


class RolloutConfig(BaseModel):
    """How the rollout manager runs episodes. Every field is checked when the config loads."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=32, ge=1, description="Most paths (episodes) in flight at once.")
    max_turns: int | None = Field(
        default=None, ge=1, description="Turn budget per episode; None: only the env's own limit."
    )
    max_new_tokens: int = Field(default=64, ge=1, description="Generated-token budget per turn.")
    max_total_tokens: int = Field(
        default=4096, ge=2, description="Budget of a whole trajectory (prompt, generated, feedback)."
    )
    temperature: float = Field(default=1.0, ge=0.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: tuple[str, ...] = Field(default=(), description="Extra stop strings (eos always stops).")
    seed: int = Field(default=0, description="Base seed; each request's seed derives from it.")
    branching: str = Field(
        default="independent", description="'independent', 'tree' or 'per_turn' (naive baseline)."
    )
    branch_factor: int = Field(default=2, ge=2, description="tree: children per branching node.")
    branch_turns: list[int] | None = Field(
        default=None, description="tree: turns that branch; None: the first ceil(log_k G) turns."
    )
    max_leaves: int | None = Field(
        default=None, ge=1, description="tree/per_turn: cap on trajectories per task (default G)."
    )
    max_nodes: int | None = Field(
        default=None, ge=1, description="Cap on generated turns per task (None: no cap)."
    )
    merge_identical: bool = Field(
        default=True, description="tree: do not expand a path whose feedback history repeats."
    )
    call_timeout_s: float = Field(default=300.0, gt=0, description="Timeout of one backend call.")
    env_timeout_s: float = Field(default=60.0, gt=0, description="Timeout of env.reset / env.step.")
    retries: int = Field(default=2, ge=0, description="Retries of a backend call that errored or timed out.")
    retry_backoff_s: float = Field(default=0.5, ge=0, description="First retry delay (doubles).")
    progress: bool = Field(default=False, description="Show a rich progress bar.")

    @field_validator("branching")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        from agentrl.rollout.branching import BRANCHING

        BRANCHING.get(v)  # raises naming the valid policies
        return v

    @field_validator("branch_turns")
    @classmethod
    def _nonneg_turns(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(t < 0 for t in v):
            raise ValueError(f"branch_turns: turns are 0-based and must be >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _budget_fits(self) -> RolloutConfig:
        if self.max_new_tokens >= self.max_total_tokens:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be below max_total_tokens "
                f"({self.max_total_tokens}), which also holds the prompt"
            )
        return self
