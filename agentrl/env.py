"""Text environments on the Gymnasium API.

A :class:`TextEnv` observes and acts in strings. ``reset`` returns the task text (with an
optional system prompt and tool schemas in ``info``); ``step(action)`` returns textual feedback
and a scalar reward that is *exactly* the weighted sum of named reward components reported in
``info["reward_components"]`` (weights in ``env.reward_weights``).

Feedback as messages: by default the rollout engine renders ``feedback`` as the next ``user``
message. A step may instead put ``info["feedback_messages"]`` (a list of ``{"role": "tool" |
"user", "content": str, "name": str}`` dicts), e.g. one ``tool`` message per tool result; the
engine then renders those messages in order. ``info["tool_calls"]`` (list of ``ToolCall``
dicts) records the calls the action made.

Subclasses implement two hooks, :meth:`TextEnv._reset_task` and :meth:`TextEnv._score`; the
outer ``reset``/``step`` keep the bookkeeping (seeding, turn limits, termination checks, reward
arithmetic) in one place::

    class Echo(TextEnv):
        reward_weights = {"correct": 1.0}

        def _reset_task(self, options):
            self.word = self.np_random.choice(["apple", "pear"])
            return f"Repeat the word {self.word!r}."

        def _score(self, action):
            ok = action.strip() == self.word
            return StepResult("Correct." if ok else f"No: write {self.word}", {"correct": float(ok)}, ok)
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium.error import ResetNeeded

__all__ = [
    "EnvSpec",
    "StepResult",
    "TextEnv",
    "TextSpace",
    "env_ids",
    "load_plugin_envs",
    "make",
    "register_env",
]

ENTRY_POINT_GROUP = "agentrl.envs"
NAMESPACE = "agentrl"


class TextSpace(gym.Space[str]):
    """Any Python string up to ``max_length`` characters (Unicode included).

    Gymnasium's own ``Text`` space only contains strings over a fixed small charset, which model
    output and feedback (punctuation, newlines, Unicode) never respects.
    """

    def __init__(self, max_length: int = 100_000, seed: int | None = None) -> None:
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    _SAMPLE_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random printable string of 0 to 32 characters (for env checkers and fuzzing)."""
        n = int(self.np_random.integers(0, 33))
        idx = self.np_random.integers(0, len(self._SAMPLE_CHARS), size=n)
        return "".join(self._SAMPLE_CHARS[i] for i in idx)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextSpace) and other.max_length == self.max_length


@dataclass
class StepResult:
    """What a subclass's ``_score`` returns for one action."""

    feedback: str
    components: dict[str, float]
    terminated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class TextEnv(gym.Env[str, str]):
    """Base class for multi-turn text environments.

    Class attributes to set in a subclass:
        reward_weights: default weight of every reward component the env reports. A component
            with weight 0 is a metric: logged and available to per-component advantages.
        max_turns: the episode is truncated after this many steps.
        system_prompt: returned in ``info["system_prompt"]`` at reset (``None``: no system
            message; note that SmolLM2's chat template then inserts its own default one).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}
    reward_weights: ClassVar[dict[str, float]] = {}
    max_turns: int = 8
    system_prompt: str | None = None

    def __init__(
        self,
        max_turns: int | None = None,
        reward_weights: dict[str, float] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if max_turns is not None:
            if not isinstance(max_turns, int) or max_turns < 1:
                raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
            self.max_turns = max_turns
        weights = dict(type(self).reward_weights)
        if reward_weights:
            unknown = sorted(set(reward_weights) - set(weights))
            if unknown:
                raise ValueError(
                    f"reward_weights: unknown component(s) {unknown}; "
                    f"{type(self).__name__} reports {sorted(weights)}"
                )
            weights.update(reward_weights)
        self.reward_weights = weights  # instance copy: never mutate the class default
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        self._needs_reset = True
        self.turn = 0
        self.history: list[tuple[str, str]] = []  # (action, feedback) pairs

    # ---- hooks for subclasses -------------------------------------------------------------
    def _reset_task(self, options: dict[str, Any] | None) -> str:
        """Draw a task with ``self.np_random`` and return its text."""
        raise NotImplementedError

    def _score(self, action: str) -> StepResult:
        """Judge one action: feedback text, reward components, whether the task is done."""
        raise NotImplementedError

    def tool_schemas(self) -> list[dict[str, Any]]:
        """OpenAI-style function schemas of the tools this env offers (none by default)."""
        return []

    def scripted_action(self) -> str:
        """An action an expert would take now (for tests, demos and SFT warm-starts)."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted policy")

    # ---- Gymnasium API --------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.turn = 0
        self.history = []
        task = self._reset_task(options)
        self._needs_reset = False
        info: dict[str, Any] = {"turn": 0, "max_turns": self.max_turns}
        if self.system_prompt is not None:
            info["system_prompt"] = self.system_prompt
        tools = self.tool_schemas()
        if tools:
            info["tools"] = tools
        return task, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded(
                f"{type(self).__name__}.step() called before reset() or after the episode "
                "ended (terminated or truncated): call reset() first"
            )
        if not isinstance(action, str):
            raise TypeError(f"action must be a str, got {type(action).__name__}")
        result = self._score(action)
        self.turn += 1
        self.history.append((action, result.feedback))
        unknown = sorted(set(result.components) - set(self.reward_weights))
        if unknown:
            raise RuntimeError(
                f"{type(self).__name__} reported undeclared reward component(s) {unknown}; "
                "add them to reward_weights (weight 0 for a metric)"
            )
        components = {k: float(v) for k, v in result.components.items()}
        reward = float(sum(self.reward_weights[k] * v for k, v in components.items()))
        terminated = bool(result.terminated)
        truncated = not terminated and self.turn >= self.max_turns
        self._needs_reset = terminated or truncated
        info = {"reward_components": components, "turn": self.turn, **result.info}
        return result.feedback, reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [f"turn {i + 1}: {a!r} -> {f}" for i, (a, f) in enumerate(self.history)]
        return "\n".join(lines)


# ---- registration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvSpec:
    """What the catalog knows about a registered environment (for `agentrl envs`)."""

    id: str
    entry_point: str
    description: str
    components: dict[str, float]
    tools: tuple[str, ...] = ()


_SPECS: dict[str, EnvSpec] = {}


def register_env(
    name: str,
    entry_point: str,
    *,
    components: dict[str, float] | None = None,
    tools: tuple[str, ...] = (),
    description: str = "",
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """Register ``agentrl/<name>-v0`` with Gymnasium (idempotent) and return its id.

    ``name`` may also be a full id such as ``"myorg/Maze-v1"``.
    """
    env_id = name if "/" in name or name.endswith(("-v0", "-v1")) else f"{NAMESPACE}/{name}-v0"
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point=entry_point,
            max_episode_steps=max_episode_steps,
            kwargs=kwargs or {},
            disable_env_checker=False,
        )
    _SPECS[env_id] = EnvSpec(env_id, entry_point, description, dict(components or {}), tools)
    return env_id


def env_ids() -> list[str]:
    """Ids of every environment registered through :func:`register_env`."""
    return sorted(_SPECS)


def env_specs() -> list[EnvSpec]:
    return [_SPECS[k] for k in env_ids()]


def make(env_id: str, **kwargs: Any) -> TextEnv:
    """``gymnasium.make`` with a clearer error for unknown ids; returns the unwrapped TextEnv."""
    if env_id not in gym.registry:
        valid = ", ".join(env_ids()) or "(none)"
        raise gym.error.UnregisteredEnv(f"unknown env id {env_id!r}; registered: {valid}")
    env = gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
    if not isinstance(env, TextEnv):
        raise TypeError(f"{env_id} is not a TextEnv (got {type(env).__name__})")
    return env


def load_plugin_envs() -> list[str]:
    """Call every ``agentrl.envs`` entry point (third-party catalogs); return the names loaded.

    An entry point may name a callable (called with no arguments) or a module (imported).
    A plugin that fails to load is reported as a warning, never a crash of ``import agentrl``.
    """
    import warnings

    loaded = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
            loaded.append(ep.name)
        except Exception as e:  # a broken plugin must not break the library
            warnings.warn(f"agentrl env plugin {ep.name!r} failed to load: {e}", stacklevel=2)
    return loaded
