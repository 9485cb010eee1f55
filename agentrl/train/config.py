"""Training configuration: pydantic models loaded from YAML, overridable from the command line.

Every field is documented where it is declared; cross-field rules live in validators so a bad
combination fails when the config loads, with a message naming the field::

    cfg = load_config("examples/guess_number.yaml", overrides=["algo.name=gspo"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvSection(_Section):
    """Which environment to train on and with which seeds."""

    id: str = Field(default="agentrl/GuessNumber-v0", description="Registered env id.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Env constructor kwargs.")
    reward_weights: dict[str, float] = Field(
        default_factory=dict, description="Override default weights of named components."
    )
    train_seed_start: int = Field(default=1000, ge=0, description="First training task seed.")
    eval_seeds: list[int] = Field(
        default_factory=lambda: list(range(16)), description="Held-out evaluation seeds."
    )
    success_component: str | None = Field(
        default=None,
        description="Component whose positive value means success (default: the first of "
        "solved/correct/all_passed/success the env reports).",
    )


class RolloutSection(_Section):
    """How episodes are generated (mapped onto the rollout engine's RolloutConfig)."""

    backend: Literal["hf", "vllm"] = Field(default="hf", description="Inference backend.")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword options for the backend."
    )
    group_size: int = Field(default=8, ge=1, description="Trajectories per task (G).")
    tasks_per_step: int = Field(default=4, ge=1, description="Tasks (prompts) per step.")
    max_turns: int = Field(default=4, ge=1, description="Turn budget per episode.")
    max_new_tokens: int = Field(default=16, ge=1, description="Generated tokens per turn.")
    temperature: float = Field(default=1.0, gt=0.0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    concurrency: int = Field(default=64, ge=1, description="Episodes in flight at once.")
    branching: Literal["independent", "tree"] = Field(
        default="independent", description="Branching policy of the rollout manager."
    )
    eval_temperature: float = Field(default=0.0, ge=0.0, description="0 = greedy evaluation.")


class FilterSection(_Section):
    """Batch filters applied between rollout and loss."""

    dynamic_sampling: bool = Field(
        default=False, description="DAPO: drop groups whose rewards are all equal, then refill."
    )
    max_refill_rounds: int = Field(default=2, ge=0, description="Extra rollout rounds to refill.")
    gfpo_k: int | None = Field(
        default=None, ge=1, description="GFPO: keep the k best of each group (None = off)."
    )
    gfpo_metric: Literal["length", "token_efficiency"] = Field(
        default="length", description="GFPO ranking: shortest, or highest reward per token."
    )
    mask_truncated: bool = Field(
        default=False, description="DAPO overlong filtering: truncated episodes get no loss."
    )


class AlgoSection(_Section):
    """The policy-gradient algorithm: a registry name plus overrides of its defaults."""

    name: str = Field(default="grpo", description="Policy loss: grpo, dr_grpo, dapo, gspo, ...")
    eps_low: float | None = Field(default=None, ge=0.0, description="Lower clip (None: default).")
    eps_high: float | None = Field(default=None, ge=0.0, description="Upper clip (None: default).")
    agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean"] | None = Field(
        default=None, description="Loss aggregation (None: the loss's default)."
    )
    advantage_mode: Literal["sum_then_normalize", "normalize_then_sum"] = Field(
        default="sum_then_normalize", description="How reward components become one advantage."
    )
    advantage_scale: Literal["std", "none"] = Field(
        default="std", description="Divide by the group std (GRPO) or not (Dr. GRPO)."
    )
    beta: float = Field(default=0.0, ge=0.0, description="KL-to-reference coefficient (0 = off).")
    kl: Literal["k1", "k2", "k3"] = Field(default="k3", description="KL estimator.")
    tis_cap: float | None = Field(
        default=None, gt=0.0, description="Truncated importance sampling cap vs rollout logprobs."
    )
    turn_advantage_weight: float = Field(
        default=1.0, ge=0.0, description="Weight of turn-level advantages in tree rollouts."
    )


class TrainSection(_Section):
    """Optimisation and bookkeeping."""

    steps: int = Field(default=20, ge=1, description="Optimizer steps.")
    lr: float = Field(default=1e-5, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.99), description="AdamW betas.")
    grad_clip: float = Field(default=1.0, gt=0.0, description="Max global gradient norm.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        default="constant", description="Learning-rate schedule after warm-up."
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    micro_batch_size: int = Field(default=8, ge=1, description="Trajectories per forward pass.")
    updates_per_batch: int = Field(
        default=1, ge=1, description="Optimizer steps per rollout batch (PPO epochs; >1: the clip acts)."
    )
    mode: Literal["sync", "async"] = Field(
        default="sync", description="async = one-step-off: generate step n+1 while training n."
    )
    max_staleness: int = Field(
        default=1, ge=0, description="Async: max policy versions a trajectory may lag behind."
    )
    eval_every: int = Field(default=0, ge=0, description="Evaluate every N steps (0 = ends only).")
    checkpoint_every: int = Field(default=5, ge=0, description="Checkpoint every N steps (0 = off).")
    keep_checkpoints: int = Field(default=2, ge=1, description="Checkpoints kept on disk.")
    train_layers: int | None = Field(
        default=None, ge=1, description="Train only the top N transformer layers (None = all)."
    )
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory.")
    threads: int | None = Field(default=None, ge=1, description="torch threads (None = cores).")


class SFTSection(_Section):
    """Optional supervised warm-start on the env's scripted-policy demonstrations (before RL)."""

    episodes: int = Field(default=0, ge=0, description="Demonstration episodes (0 = no SFT).")
    epochs: int = Field(default=1, ge=1, description="Passes over the demonstrations.")
    batch_size: int = Field(default=8, ge=1, description="Episodes per SFT step.")
    lr: float = Field(default=5e-5, gt=0.0, description="AdamW learning rate of the warm-start.")
    seed_start: int = Field(default=100_000, ge=0, description="First demo seed (apart from RL/eval).")


class TrainConfig(_Section):
    """A whole run. Load with :func:`load_config`."""

    model: str = Field(default="smollm2-135m-instruct", description="Name or local folder.")
    seed: int = Field(default=0, description="Seeds model init (tiny), sampling and data order.")
    out_dir: str = Field(default="runs/default", description="Metrics, plots and checkpoints.")
    env: EnvSection = Field(default_factory=EnvSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    algo: AlgoSection = Field(default_factory=AlgoSection)
    filters: FilterSection = Field(default_factory=FilterSection)
    train: TrainSection = Field(default_factory=TrainSection)
    sft: SFTSection = Field(default_factory=SFTSection)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainConfig:
        from agentrl.algos import LOSSES

        if self.algo.name not in LOSSES:
            raise ValueError(f"algo.name: unknown loss {self.algo.name!r}; valid: {', '.join(LOSSES.names())}")
        if self.algo.name.startswith("gspo"):
            for field in ("eps_low", "eps_high"):
                eps = getattr(self.algo, field)
                if eps is not None and eps > 0.01:
                    raise ValueError(
                        f"algo.{field}={eps}: GSPO clips a length-normalised sequence ratio, "
                        "so its range is ~3e-4/4e-4; a token-level range like 0.2 disables clipping"
                    )
        k, g = self.filters.gfpo_k, self.rollout.group_size
        if k is not None and k >= g:
            raise ValueError(
                f"filters.gfpo_k={k} must be < rollout.group_size={g}: GFPO samples a larger "
                "group and keeps the k best"
            )
        if self.train.mode == "async" and self.train.max_staleness < 1:
            raise ValueError(
                "train.max_staleness=0 contradicts train.mode=async: one-step-off generation "
                "trains on trajectories one policy version old (use mode=sync)"
            )
        self._check_env_weights()
        return self

    def _check_env_weights(self) -> None:
        import agentrl  # noqa: F401  (registers the catalog)
        from agentrl.env import _SPECS

        spec = _SPECS.get(self.env.id)
        if spec is None:
            import gymnasium

            if self.env.id not in gymnasium.registry:
                raise ValueError(f"env.id: unknown environment {self.env.id!r}")
            return
        unknown = sorted(set(self.env.reward_weights) - set(spec.components))
        if unknown:
            raise ValueError(
                f"env.reward_weights: {self.env.id} has no component(s) {unknown}; "
                f"it reports {sorted(spec.components)}"
            )


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_scalar(value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or defaults), apply overrides, validate.

    Raises:
        ValueError: with the offending field's dotted name in the message.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
    data = apply_overrides(data, overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(_format_validation_error(e, path)) from None


def _format_validation_error(e: ValidationError, path: Any) -> str:
    lines = [f"invalid config{f' {path}' if path else ''}:"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
