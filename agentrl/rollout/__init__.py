"""The rollout engine: exact multi-turn tokens, an async manager, branching within a budget.

``collect(...)`` is the one-call synchronous entry point; :class:`RolloutManager` is the async,
streaming one the trainer and the rollout service use.
"""

from agentrl.rollout.branching import BRANCHING, TreeBudget, turn_groups
from agentrl.rollout.collect import collect, run_sync
from agentrl.rollout.config import RolloutConfig, RolloutTask
from agentrl.rollout.manager import RolloutManager, RolloutStats
from agentrl.rollout.tokens import TemplatePrefixError, TokenBuilder, check_prefix_property

__all__ = [
    "BRANCHING",
    "RolloutConfig",
    "RolloutManager",
    "RolloutStats",
    "RolloutTask",
    "TemplatePrefixError",
    "TokenBuilder",
    "TreeBudget",
    "check_prefix_property",
    "collect",
    "run_sync",
    "turn_groups",
]
