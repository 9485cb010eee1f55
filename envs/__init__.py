"""The environment catalog, installed as ``agentrl.envs``.

Importing ``agentrl`` imports this module, which registers every catalog environment with
Gymnasium as ``agentrl/<Name>-v0``.
"""

from agentrl.env import register_env

from .guess_number import GuessNumber

__all__ = ["GuessNumber"]

register_env(
    "GuessNumber",
    "agentrl.envs.guess_number:GuessNumber",
    components=GuessNumber.reward_weights,
    description="Guess a hidden integer from higher/lower feedback (multi-turn).",
)
