"""ppo_jax: massively parallel PPO for embodied control, with on-device trust-region diagnostics."""

from ppo_jax.checkpoint import load_policy
from ppo_jax.config import PPOConfig
from ppo_jax.networks import make_policy
from ppo_jax.runner import NonFiniteError, TrainResult, train
from ppo_jax.step import TrainState, make_train_chunk, make_train_step

__all__ = [
  "NonFiniteError",
  "PPOConfig",
  "TrainResult",
  "TrainState",
  "load_policy",
  "make_policy",
  "make_train_chunk",
  "make_train_step",
  "train",
]
__version__ = "0.1.0"
