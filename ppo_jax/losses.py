"""The PPO objective: clipped surrogate, (optionally clipped) value loss, entropy bonus.

Loss functions take the networks and their coefficients as keyword arguments, bound with
`functools.partial` by the step that uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from ppo_jax import diagnostics
from ppo_jax.gae import normalize_advantages
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import ActorCriticParams, Batch

if TYPE_CHECKING:
  from ppo_jax.networks import ActorCritic


def clipped_surrogate(
  ratio: jax.Array, advantages: jax.Array, clipping_epsilon: float
) -> jax.Array:
  """Per-sample PPO objective min(r A, clip(r, 1 - eps, 1 + eps) A), to be maximized.

  Args:
    ratio: pi_new(a|s) / pi_old(a|s), any shape.
    advantages: same shape as `ratio`.
    clipping_epsilon: eps.
  Returns:
    Same shape as the inputs.
  """
  clipped = jnp.clip(ratio, 1.0 - clipping_epsilon, 1.0 + clipping_epsilon)
  return jnp.minimum(ratio * advantages, clipped * advantages)


def value_loss(
  values: jax.Array,
  old_values: jax.Array,
  targets: jax.Array,
  clipping_epsilon_value: float | None,
) -> jax.Array:
  """Mean of 0.5 (V - target)^2; with clipping, the larger of the clipped and unclipped errors.

  The clipped prediction is old_V + clip(V - old_V, -eps_v, eps_v) (Schulman et al.'s
  baselines implementation).
  """
  loss = jnp.square(values - targets)
  if clipping_epsilon_value is not None:
    clipped = old_values + jnp.clip(
      values - old_values, -clipping_epsilon_value, clipping_epsilon_value
    )
    loss = jnp.maximum(loss, jnp.square(clipped - targets))
  return 0.5 * jnp.mean(loss)


class LossTerms(NamedTuple):
  """The differentiable scalars an objective is made of (entropy already weighted)."""

  policy: jax.Array
  value: jax.Array
  entropy: jax.Array


class LossMetrics(NamedTuple):
  """Scalars measured on one minibatch, at the parameters before its update."""

  total_loss: jax.Array
  policy_loss: jax.Array
  value_loss: jax.Array
  entropy_loss: jax.Array
  approx_kl: jax.Array
  approx_kl_k1: jax.Array
  exact_kl: jax.Array
  clip_fraction: jax.Array
  zero_gradient_fraction: jax.Array
  entropy: jax.Array
  action_std: jax.Array
  action_std_min: jax.Array
  explained_variance: jax.Array


def loss_terms(
  params: ActorCriticParams,
  normalizer: RunningStatistics,
  batch: Batch,
  key: jax.Array,
  *,
  networks: ActorCritic,
  clipping_epsilon: float,
  clipping_epsilon_value: float | None,
  entropy_cost: float,
  normalize_advantage: bool,
) -> tuple[LossTerms, LossMetrics]:
  """The PPO loss terms of a flat minibatch [N, ...] and its diagnostics.

  `key` draws the sample of a tanh-squashed policy's entropy estimate (see `distribution`).

  Returns:
    (terms, metrics); metrics.total_loss is left 0 for the objective to fill in.
  """
  distribution = networks.policy(params.policy, normalizer, batch.obs)
  values = networks.value(params.value, normalizer, batch.obs)
  log_ratio = distribution.log_prob(batch.action) - batch.log_prob
  ratio = jnp.exp(log_ratio)

  advantages = normalize_advantages(batch.advantage) if normalize_advantage else batch.advantage
  policy_loss = -jnp.mean(clipped_surrogate(ratio, advantages, clipping_epsilon))
  v_loss = value_loss(values, batch.value, batch.target, clipping_epsilon_value)
  entropy = jnp.mean(distribution.entropy(key))
  entropy_loss = -entropy_cost * entropy
  rollout = distribution.replace(mean=batch.mean, std=batch.std)
  metrics = LossMetrics(
    total_loss=jnp.zeros(()),
    policy_loss=policy_loss,
    value_loss=v_loss,
    entropy_loss=entropy_loss,
    approx_kl=diagnostics.approx_kl(log_ratio),
    approx_kl_k1=diagnostics.approx_kl_k1(log_ratio),
    exact_kl=jnp.mean(rollout.kl(distribution)),
    clip_fraction=diagnostics.clip_fraction(ratio, clipping_epsilon),
    zero_gradient_fraction=jnp.mean(
      diagnostics.zero_gradient_mask(ratio, advantages, clipping_epsilon).astype(jnp.float32)
    ),
    entropy=entropy,
    action_std=jnp.mean(distribution.std),
    action_std_min=jnp.min(distribution.std),
    explained_variance=diagnostics.explained_variance(values, batch.target),
  )
  return LossTerms(policy=policy_loss, value=v_loss, entropy=entropy_loss), metrics


def ppo_loss(
  params: ActorCriticParams,
  normalizer: RunningStatistics,
  batch: Batch,
  key: jax.Array,
  *,
  vf_loss_coefficient: float,
  **term_kwargs,
) -> tuple[jax.Array, LossMetrics]:
  """PPO's minibatch objective, to be minimized: (loss, metrics), metrics without gradient.

  loss = -clipped surrogate + vf_loss_coefficient * value loss - entropy_cost * entropy.
  `term_kwargs` are `loss_terms`'s keyword arguments.
  """
  terms, metrics = loss_terms(params, normalizer, batch, key, **term_kwargs)
  total = terms.policy + vf_loss_coefficient * terms.value + terms.entropy
  return total, jax.lax.stop_gradient(metrics._replace(total_loss=total))
