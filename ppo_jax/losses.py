"""The PPO objective: clipped surrogate, (optionally clipped) value loss, entropy bonus."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppo_jax import diagnostics
from ppo_jax.config import PPOConfig
from ppo_jax.networks import ActorCritic, gaussian_entropy, gaussian_log_prob
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import ActorCriticParams, Batch


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


def make_loss(cfg: PPOConfig, networks: ActorCritic):
  """Returns loss_fn(params, normalizer, batch) -> (loss, LossMetrics) on a flat minibatch.

  With algorithm="trpo" the loss is the value loss alone (the policy's gradient is zero);
  the metrics are the same.
  """

  def loss_fn(
    params: ActorCriticParams, normalizer: RunningStatistics, batch: Batch
  ) -> tuple[jax.Array, LossMetrics]:
    mean, std = networks.policy(params.policy, normalizer, batch.obs)
    values = networks.value(params.value, normalizer, batch.obs)
    log_ratio = gaussian_log_prob(batch.action, mean, std) - batch.log_prob
    ratio = jnp.exp(log_ratio)

    advantages = batch.advantage
    if cfg.normalize_advantage:
      advantages = (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + 1e-8)
    policy_loss = -jnp.mean(clipped_surrogate(ratio, advantages, cfg.clipping_epsilon))
    v_loss = value_loss(values, batch.value, batch.target, cfg.clipping_epsilon_value)
    entropy = jnp.mean(gaussian_entropy(std))
    entropy_loss = -cfg.entropy_cost * entropy
    total = policy_loss + cfg.value_loss_coef * v_loss + entropy_loss
    if cfg.algorithm == "trpo":  # the policy moves by its own step; minibatches fit the value
      total = cfg.value_loss_coef * v_loss

    metrics = LossMetrics(
      total_loss=total,
      policy_loss=policy_loss,
      value_loss=v_loss,
      entropy_loss=entropy_loss,
      approx_kl=diagnostics.approx_kl(log_ratio),
      approx_kl_k1=diagnostics.approx_kl_k1(log_ratio),
      exact_kl=jnp.mean(diagnostics.gaussian_kl(batch.mean, batch.std, mean, std)),
      clip_fraction=diagnostics.clip_fraction(ratio, cfg.clipping_epsilon),
      zero_gradient_fraction=jnp.mean(
        diagnostics.zero_gradient_mask(ratio, advantages, cfg.clipping_epsilon).astype(jnp.float32)
      ),
      entropy=entropy,
      action_std=jnp.mean(std),
      action_std_min=jnp.min(std),
      explained_variance=diagnostics.explained_variance(values, batch.target),
    )
    return total, jax.tree.map(jax.lax.stop_gradient, metrics)

  return loss_fn
