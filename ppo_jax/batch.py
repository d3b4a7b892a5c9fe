"""From a rollout to the update's data: values and GAE once per rollout, as flat samples; or
whole segments whose GAE the loss computes again on every minibatch (`recompute_advantages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from ppo_jax.config import PPOConfig
from ppo_jax.gae import compute_gae
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import Batch, Params, Segments, Transition

if TYPE_CHECKING:
  from ppo_jax.networks import ActorCritic
  from ppo_jax.update import LossFn


def make_batch(
  cfg: PPOConfig,
  networks: ActorCritic,
  value_params: Params,
  normalizer: RunningStatistics,
  transitions: Transition,
) -> Batch:
  """Values and GAE of a rollout [T, N, ...], flattened to samples [T * N, ...]."""
  return make_update_data(cfg, networks, value_params, normalizer, transitions)[0]


def make_update_data(
  cfg: PPOConfig,
  networks: ActorCritic,
  value_params: Params,
  normalizer: RunningStatistics,
  transitions: Transition,
) -> tuple[Batch, Batch | Segments]:
  """(the rollout's batch, as `make_batch`; what the minibatches are drawn from: that batch,
  or with `recompute_advantages` the rollout's whole segments)."""
  values = networks.value(value_params, normalizer, transitions.obs)
  next_values = networks.value(value_params, normalizer, transitions.next_obs)
  batch = gae_batch(cfg, transitions, values, next_values)
  if cfg.recompute_advantages:
    return batch, segments(transitions, values, next_values)
  return batch, batch


def gae_batch(
  cfg: PPOConfig, transitions: Transition, values: jax.Array, next_values: jax.Array
) -> Batch:
  """GAE of a rollout [T, N, ...] from its values [T, N], as samples [T * N, ...]."""
  advantages, targets = compute_gae(
    transitions.reward * cfg.reward_scaling,
    values,
    next_values,
    transitions.termination,
    transitions.truncation,
    cfg.discounting,
    cfg.gae_lambda,
    cfg.bootstrap_on_timeout,
  )
  batch = Batch(
    obs=transitions.obs,
    action=transitions.action,
    log_prob=transitions.log_prob,
    mean=transitions.mean,
    std=transitions.std,
    value=values,
    advantage=advantages,
    target=targets,
  )
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)


def segments(transitions: Transition, values: jax.Array, next_values: jax.Array) -> Segments:
  """A rollout [T, S, ...] and its rollout values [T, S] as whole segments [S, T, ...]."""
  swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
  return Segments(
    transitions=jax.tree.map(swap, transitions), value=swap(values), next_value=swap(next_values)
  )


def with_fresh_advantages(cfg: PPOConfig, networks: ActorCritic, loss_fn: LossFn) -> LossFn:
  """`loss_fn` on a minibatch of whole segments [B, T, ...] whose GAE is computed first, with
  the value network being trained (held constant in the gradient), as Brax's ppo.train does.

  Inside a segment the next observation is the next step's until an episode ends, so the
  network is evaluated on the segment's observations and on its last next observation only.
  Where an episode ended, the final observation's value is the rollout's (it counts only at
  a truncation, with `bootstrap_on_timeout`). Value clipping keeps the rollout's values as
  its reference.
  """

  def loss(params, normalizer, minibatch: Segments, key):
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    transitions = jax.tree.map(swap, minibatch.transitions)  # [T, B, ...]
    value_params = jax.lax.stop_gradient(params.value)
    values = networks.value(value_params, normalizer, transitions.obs)
    last = jax.tree.map(lambda x: x[-1], transitions.next_obs)
    next_values = jnp.concatenate(
      [values[1:], networks.value(value_params, normalizer, last)[None]]
    )
    ended = jnp.maximum(transitions.termination, transitions.truncation) > 0
    next_values = jnp.where(ended, swap(minibatch.next_value), next_values)
    batch = gae_batch(cfg, transitions, values, next_values)
    batch = batch._replace(value=swap(minibatch.value).reshape(-1))
    return loss_fn(params, normalizer, batch, key)

  return loss
