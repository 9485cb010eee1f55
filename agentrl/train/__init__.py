"""Training: config, the trainer loop, checkpoints, metrics, supervised warm-start."""

from agentrl.train.config import TrainConfig, load_config
from agentrl.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config"]
