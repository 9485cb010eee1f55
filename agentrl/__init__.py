"""agentrl: train LLM agents with RL on multi-turn text environments.

``import agentrl`` registers every catalog environment as ``agentrl/<Name>-v0`` with Gymnasium
and loads environments that third-party packages declare under the ``agentrl.envs`` entry point.
"""

from agentrl import envs as _catalog  # noqa: F401  (registers the catalog)
from agentrl.env import StepResult, TextEnv, env_ids, load_plugin_envs, make, register_env
from agentrl.types import Message, RewardVector, ToolCall, Trajectory, TrajectoryGroup, Turn

__version__ = "0.1.0"

load_plugin_envs()

__all__ = [
    "Message",
    "RewardVector",
    "StepResult",
    "TextEnv",
    "ToolCall",
    "Trajectory",
    "TrajectoryGroup",
    "Turn",
    "env_ids",
    "make",
    "register_env",
]
