"""The rules that tie several of PPOConfig's fields together.

`PPOConfig.__post_init__` checks each field's own type and rule first (`ppo_jax.rules`), then
these; each raises a ValueError that names the fields, their values and the rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envs import BACKENDS, registered
from ppo_jax.rules import require

if TYPE_CHECKING:
  from ppo_jax.config import PPOConfig


def check_combinations(c: PPOConfig) -> None:
  """The rules that tie several fields together."""
  source, registration = c.env.partition("/")[0], registered().get(c.env)
  if source in BACKENDS or registration is not None:  # else checked when built (envs.make)
    backends = BACKENDS[source] if source in BACKENDS else registration.backends
    require(
      c.env_backend is None or c.env_backend in backends,
      f"env_backend ({c.env_backend!r}) must be None or one of {backends} for {c.env}",
    )
  require(
    c.seed + c.num_seeds <= 2**32,
    f"seed + num_seeds - 1 ({c.seed} + {c.num_seeds} - 1) must be < 2**32: the panel's seeds",
  )
  require(
    c.num_segments % c.num_envs == 0,
    f"batch_size * num_minibatches ({c.batch_size} * {c.num_minibatches} = {c.num_segments}) "
    f"must be divisible by num_envs ({c.num_envs}): each iteration runs whole unrolls of all envs",
  )
  require(
    c.episode_length % c.action_repeat == 0,
    f"episode_length ({c.episode_length}) must be divisible by action_repeat ({c.action_repeat})",
  )
  require(
    c.num_iterations < 2**31,
    f"num_timesteps ({c.num_timesteps}) and num_evals ({c.num_evals}) give {c.num_iterations} "
    f"iterations of {c.env_steps_per_iteration} env steps; the iteration count must be < 2**31",
  )
  require(
    c.kl_spike_min < c.kl_spike_max,
    f"kl_spike_min ({c.kl_spike_min}) must be < kl_spike_max ({c.kl_spike_max})",
  )
  require(
    c.learning_rate_schedule_min_lr <= c.learning_rate <= c.learning_rate_schedule_max_lr
    or c.learning_rate_schedule != "ADAPTIVE_KL",
    f"learning_rate ({c.learning_rate}) must lie in [learning_rate_schedule_min_lr, learning_rate_schedule_max_lr] "
    f"([{c.learning_rate_schedule_min_lr}, {c.learning_rate_schedule_max_lr}]) with learning_rate_schedule='ADAPTIVE_KL'",
  )
  if c.algorithm == "trpo":
    require(
      c.target_kl is None,
      f"target_kl ({c.target_kl}) must be None with algorithm='trpo': TRPO bounds each step's "
      "KL by trpo_max_kl instead of stopping epochs early",
    )
    require(
      c.learning_rate_schedule != "ADAPTIVE_KL",
      "learning_rate_schedule ('ADAPTIVE_KL') steers the policy's KL through the learning rate; "
      "with algorithm='trpo' the learning rate moves only the value network",
    )
    require(
      c.max_update_kl is None,
      f"max_update_kl ({c.max_update_kl}) must be None with algorithm='trpo': TRPO's line "
      "search already bounds each policy step by trpo_max_kl",
    )
