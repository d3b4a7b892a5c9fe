"""ppo_jax: massively parallel PPO for embodied control, with on-device trust-region diagnostics."""

from ppo_jax.config import PPOConfig
from ppo_jax.networks import make_policy
from ppo_jax.train import (
  NonFiniteError,
  TrainResult,
  load_policy,
  make_train_chunk,
  make_train_step,
  train,
)

__all__ = [
  "NonFiniteError",
  "PPOConfig",
  "TrainResult",
  "load_policy",
  "make_policy",
  "make_train_chunk",
  "make_train_step",
  "train",
]
__version__ = "0.1.0"
