"""Tutorial: write a text environment from scratch, register it, and let the embedded model play.

An environment is a subclass of ``agentrl.TextEnv`` with two hooks:

* ``_reset_task(options) -> str`` draws a task with ``self.np_random`` (so seeds reproduce it)
  and returns the task text the model sees first;
* ``_score(action) -> StepResult`` judges one reply: feedback text for the model, named reward
  components, and whether the episode is over.

The reward of a step is the weighted sum of its components (weights in ``reward_weights``); the
base class adds the bookkeeping (turn limit, reset checks, ``info["reward_components"]``).

Run it (about 20 s on a CPU with the embedded SmolLM2-135M-Instruct, which solves about 5 of 8)::

    python examples/custom_env.py                      # 8 episodes
    python examples/custom_env.py --model tiny-random  # a few seconds, random replies
"""

from __future__ import annotations

import argparse
import re
from typing import Any, ClassVar

from gymnasium.utils.env_checker import check_env

from agentrl import StepResult, TextEnv, make, register_env
from agentrl.evaluate import evaluate, print_report

# word -> accepted opposites
PAIRS = {
    "hot": ("cold",),
    "big": ("small", "little", "tiny"),
    "up": ("down",),
    "day": ("night",),
    "fast": ("slow",),
    "happy": ("sad", "unhappy"),
    "open": ("closed", "shut"),
    "light": ("dark",),
    "yes": ("no",),
    "wet": ("dry",),
    "full": ("empty",),
    "early": ("late",),
    "old": ("new", "young"),
}


class Opposites(TextEnv):
    """Name the opposite of a word; a wrong answer earns a hint (the next letter) and a retry.

    Components: ``correct`` 1.0 on the step with an accepted opposite; ``format`` 0 for a
    one-word reply, -1/max_turns otherwise (a penalty, so fast answers never lose credit);
    ``hints`` 1.0 per hint given (weight -0.1).
    """

    reward_weights: ClassVar[dict[str, float]] = {"correct": 1.0, "format": 0.3, "hints": -0.1}
    max_turns = 3
    system_prompt = "Answer with a single word."

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        words = sorted(PAIRS)
        self.word = words[int(self.np_random.integers(len(words)))]
        return f"What is the opposite of the word '{self.word}'? Reply with one word."

    def _score(self, action: str) -> StepResult:
        words = re.findall(r"[a-z]+", action.lower())
        guess = words[-1] if words else ""  # lenient: "The opposite is cold." reads "cold"
        fmt = 0.0 if len(words) == 1 else -1.0 / self.max_turns
        answers = PAIRS[self.word]
        if guess in answers:
            return StepResult("Correct!", {"correct": 1.0, "format": fmt}, terminated=True)
        hint = answers[0][: self.turn + 1]
        return StepResult(
            f"No, '{guess or action.strip()[:40]}' is not the opposite of '{self.word}'. "
            f"Hint: it starts with '{hint}'. Reply with one word.",
            {"correct": 0.0, "format": fmt, "hints": 1.0},
        )

    def scripted_action(self) -> str:
        return PAIRS[self.word][0]


# Registration makes the env visible to gymnasium.make, `agentrl envs` and the rollout engine.
# (A library would register "mypackage.module:Opposites" from its own module.)
ENV_ID = register_env(
    "Opposites",
    f"{__name__}:Opposites",
    components=Opposites.reward_weights,
    description="Tutorial: name the opposite of a word (examples/custom_env.py).",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--episodes", type=int, default=8)
    args = parser.parse_args()

    env = make(ENV_ID)
    check_env(env, skip_render_check=True)  # the Gymnasium API contract
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.scripted_action())
    print(f"scripted answer: reward {reward} components {info['reward_components']}")

    report = evaluate(ENV_ID, args.model, seeds=list(range(args.episodes)), max_new_tokens=24)
    print_report(report)


if __name__ == "__main__":
    main()
