"""Generalized advantage estimation (Schulman et al. 2016), time-major, one reverse scan,
and the standardization of advantages."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def compute_gae(
  rewards: jax.Array,
  values: jax.Array,
  next_values: jax.Array,
  terminations: jax.Array,
  truncations: jax.Array,
  discounting: float,
  gae_lambda: float,
  bootstrap_on_timeout: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """Advantages and value targets of a rollout.

  delta_t = r_t + gamma * (1 - term_t) * V(s'_t) - V(s_t), where s'_t is the true next
  observation (the final one of an episode that ended at t). A termination stops the
  bootstrap; a truncation keeps it (the episode was cut, not finished). Either one cuts
  the lambda-trace, because the next step belongs to a new episode:
  A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}, and A_T = 0 past the rollout.
  Without `bootstrap_on_timeout` a truncated step's delta is 0 instead, as in Brax's GAE: it
  gets no advantage and its own value as target.

  Args:
    rewards: [T, B] rewards.
    values: [T, B] V(s_t).
    next_values: [T, B] V(s'_t) of the true next observations.
    terminations: [T, B] 1.0 where the episode terminated at step t.
    truncations: [T, B] 1.0 where the episode was cut by the time limit at step t.
    discounting: gamma.
    gae_lambda: lambda.
    bootstrap_on_timeout: bootstrap truncated steps (True) or zero their deltas (False).
  Returns:
    (advantages, value_targets), each [T, B]; value_targets = advantages + values.
  """
  chex.assert_equal_shape([rewards, values, next_values, terminations, truncations])
  chex.assert_rank(rewards, 2)
  continues = 1.0 - terminations
  traces = 1.0 - jnp.maximum(terminations, truncations)
  deltas = rewards + discounting * continues * next_values - values
  if not bootstrap_on_timeout:
    deltas = deltas * (1.0 - truncations)

  def backward(advantage, step):
    delta, trace = step
    advantage = delta + discounting * gae_lambda * trace * advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, traces), reverse=True)
  return advantages, advantages + values


def normalize_advantages(advantages: jax.Array) -> jax.Array:
  """Advantages standardized to mean 0 and std 1 over all of their elements."""
  return (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + 1e-8)
