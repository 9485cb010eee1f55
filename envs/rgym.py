"""ReasoningGym: the procedural tasks of the ``reasoning-gym`` package as (multi-turn) envs.

Each episode is one item of a reasoning-gym dataset (``dataset="basic_arithmetic"``,
``"chain_sum"``, ``"letter_counting"``, ... any name in ``reasoning_gym.factory.DATASETS``),
scored by that dataset's own verifier (``score_answer``). A wrong answer gets feedback with the
verifier's score and the episode goes on, so ``max_turns`` is the number of attempts
(``max_turns=1``: single-turn). The reset seed selects the item deterministically: it draws an
index into a dataset of ``size`` items generated with ``data_seed`` (``options={"index": i}``
picks one directly, e.g. for a fixed evaluation set).

Optional dependency: install with ``pip install 'agentrl[reasoning]'``. The env is registered as
``agentrl/ReasoningGym-v0`` only when ``reasoning_gym`` is importable (the package itself is
imported when the first env is built, not at ``import agentrl``).

Components (per step; the episode's value is their sum):
    correct     growth of the best verifier score so far (potential-based: the episode's sum is
                the best attempt's score, 1.0 when solved, however many attempts it took).
    solved      1.0 on the step whose answer scores 1.0 (weight 0: a logged metric).
    format      0 when the reply has ``<answer>...</answer>`` tags, -0.5/max_turns when the
                answer was read from untagged text (the whole reply, the text after "answer is",
                the last line or the last number; the best-scoring reading counts), -1/max_turns
                for an empty reply.
    turns_used  1.0 per step (weight -0.02: a small price on every extra attempt).

Example episode (``dataset="basic_arithmetic"``)::

    task     "Calculate -5 * -6.\\n\\nGive your final answer inside <answer></answer> tags ..."
    action   "The answer is 25."    -> "Your answer '25' is not correct (verifier score 0.00 of
                                        1). I read it from your reply because it has no
                                        <answer></answer> tags. Try again ..."
    action   "<answer>30</answer>"  -> "Correct!"     correct=1, solved=1
"""

from __future__ import annotations

import importlib.util
import math
import re
from typing import Any, ClassVar

from agentrl.env import StepResult, TextEnv, register_env

INSTALL_HINT = "pip install 'agentrl[reasoning]'  (or: pip install reasoning-gym)"
_TAGGED = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_AFTER = re.compile(r"answer\s*(?:is|:)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def _clean(text: str) -> str:
    """Drop markdown emphasis, quotes and a final full stop around a reading."""
    return text.strip(" *`\"'").rstrip(".").strip(" *`\"'")


def answer_candidates(reply: str) -> tuple[list[str], float]:
    """Readings of ``reply`` to verify, and the format score (1.0 tagged, 0.5 untagged, 0 empty).

    With ``<answer>`` tags the last tagged text is the only reading; without, up to four
    readings: the whole reply, the text after the last "answer is"/"answer:", the last line
    and the last number.
    """
    tagged = _TAGGED.findall(reply)
    if tagged:
        return [tagged[-1].strip()], 1.0
    text = reply.strip()
    if not text:
        return [], 0.0
    lines = [ln for ln in text.splitlines() if ln.strip()]
    after = _AFTER.findall(text)
    numbers = _NUMBER.findall(text)
    readings = [text, after[-1] if after else "", lines[-1], numbers[-1] if numbers else ""]
    out: list[str] = []
    for r in (_clean(x) for x in readings):
        if r and r not in out:
            out.append(r)
    return out, 0.5


def dataset_names() -> list[str]:
    """Names of every reasoning-gym dataset (imports reasoning_gym)."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


class ReasoningGym(TextEnv):
    """A reasoning-gym task per episode, verified by the dataset's ``score_answer``."""

    reward_weights: ClassVar[dict[str, float]] = {
        "correct": 1.0,
        "solved": 0.0,
        "format": 0.5,
        "turns_used": -0.02,
    }
    max_turns = 3
    system_prompt = (
        "Solve the task. Think briefly if you need to, then write your final answer inside "
        "<answer></answer> tags."
    )

    def __init__(
        self,
        dataset: str = "basic_arithmetic",
        size: int = 10_000,
        data_seed: int = 0,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Args:
        dataset: a reasoning-gym dataset name (see :func:`dataset_names`).
        size: how many items the seeds choose from.
        data_seed: the dataset's generation seed (a different item pool per value).
        config: extra fields of the dataset's config class (e.g. ``{"min_terms": 2}``).
        **kwargs: ``max_turns``, ``reward_weights``, ``render_mode`` (see ``TextEnv``).
        """
        if importlib.util.find_spec("reasoning_gym") is None:
            raise ImportError(f"ReasoningGym needs the reasoning-gym package: {INSTALL_HINT}")
        import reasoning_gym

        valid = dataset_names()
        if dataset not in valid:
            raise ValueError(
                f"dataset: unknown reasoning-gym dataset {dataset!r}; valid: {', '.join(valid)}"
            )
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        super().__init__(**kwargs)
        try:
            self.data = reasoning_gym.create_dataset(
                dataset, size=size, seed=data_seed, **(config or {})
            )
        except (TypeError, ValueError, AssertionError) as e:
            raise ValueError(
                f"config: reasoning-gym rejected {dataset!r} with {config or {}}: {e}"
            ) from e
        self.dataset, self.size = dataset, size
        self.entry: dict[str, Any] = {}
        self.index = 0
        self.best = 0.0

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(self.size))
        elif not isinstance(index, int) or not 0 <= index < self.size:
            raise ValueError(
                f"options['index'] must be an integer in [0, {self.size}), got {index!r}"
            )
        self.index = index
        self.entry = self.data[index]
        self.best = 0.0
        return (
            f"{self.entry['question']}\n\nGive your final answer inside <answer></answer> "
            "tags, for example <answer>your answer</answer>."
        )

    def verify(self, answer: str) -> float:
        """The dataset's verifier score for ``answer`` in [0, 1] (0 when the verifier crashes)."""
        try:
            score = float(self.data.score_answer(answer, self.entry))
        except Exception:  # a verifier bug on odd input must not end the rollout
            return 0.0
        return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0

    def _score(self, action: str) -> StepResult:
        readings, fmt = answer_candidates(action)
        scored = [(self.verify(r), r) for r in readings]
        score, answer = max(scored, key=lambda x: x[0]) if scored else (0.0, "")
        components = {
            "format": (fmt - 1.0) / self.max_turns,
            "turns_used": 1.0,
            "correct": max(0.0, score - self.best),
            "solved": float(score >= 1.0),
        }
        self.best = max(self.best, score)
        if score >= 1.0:
            return StepResult("Correct!", components, True)
        if not readings:
            text = "Your reply is empty."
        else:
            text = f"Your answer {answer[:120]!r} is not correct (verifier score {score:.2f} of 1)."
            if fmt < 1.0:
                text += " I read it from your reply because it has no <answer></answer> tags."
        if self.turn + 1 >= self.max_turns:
            return StepResult(f"{text} The correct answer was: {self.entry['answer']}", components)
        return StepResult(
            f"{text} Try again: give your final answer inside <answer></answer> tags.", components
        )

    def scripted_action(self) -> str:
        """The dataset's reference answer in tags (scores 1.0 for datasets with a single oracle
        answer; a few puzzle datasets verify solutions differently and may score it lower)."""
        return f"<answer>{self.entry['answer']}</answer>"


if importlib.util.find_spec("reasoning_gym") is not None:
    register_env(
        "ReasoningGym",
        "agentrl.envs.rgym:ReasoningGym",
        components=ReasoningGym.reward_weights,
        description="reasoning-gym tasks (dataset=..., default basic_arithmetic) checked by "
        "their verifiers; retry with feedback.",
    )
