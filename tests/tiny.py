"""A config small enough to compile and train in seconds."""

from ppo_jax import PPOConfig


def tiny(**overrides) -> PPOConfig:
  settings = dict(
    env="builtin/cartpole_balance",
    num_timesteps=2048,
    num_envs=8,
    batch_size=8,
    num_minibatches=4,
    unroll_length=8,
    num_updates_per_batch=2,
    episode_length=100,
    policy_hidden_layer_sizes=(16, 16),
    value_hidden_layer_sizes=(16, 16),
    reward_scaling=1.0,
    num_evals=3,
    num_eval_envs=4,
  )
  return PPOConfig(**{**settings, **overrides})
