"""Named configurations. `default` is what `make train` runs."""

from __future__ import annotations

from ppo_jax import PPOConfig

PRESETS: dict[str, PPOConfig] = {
  # Brax's published settings for inverted_pendulum, on 1024 envs; solved (1000) near 1.3M steps.
  "brax_inverted_pendulum": PPOConfig(
    env="brax/inverted_pendulum",
    num_timesteps=2_000_000,
    num_envs=1024,
    batch_size=1024,
    unroll_length=5,
    num_minibatches=32,
    num_updates_per_batch=4,
    episode_length=1000,
    learning_rate=3e-4,
    entropy_cost=1e-2,
    discounting=0.97,
    reward_scaling=10.0,
    normalize_observations=True,
    num_evals=14,  # 13 chunks of one iteration: 2.13M steps
  ),
  # The built-in continuous cart-pole; solved (475 of 500) within ~200k steps.
  "cartpole_balance": PPOConfig(
    env="builtin/cartpole_balance",
    num_timesteps=300_000,
    num_envs=64,
    batch_size=64,
    num_minibatches=8,
    unroll_length=32,
    num_updates_per_batch=4,
    episode_length=500,
    learning_rate=1e-3,
    entropy_cost=1e-3,
    discounting=0.99,
    reward_scaling=1.0,
    num_evals=6,
  ),
}
PRESETS["default"] = PRESETS["brax_inverted_pendulum"]
