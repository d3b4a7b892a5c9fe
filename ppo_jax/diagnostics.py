"""Trust-region diagnostics of a policy update: pure jnp, no side effects.

Every function reduces over all of its input unless it says otherwise, so it works on a
minibatch [N] as well as on a rollout [T, B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def approx_kl(log_ratio: jax.Array) -> jax.Array:
  """Low-variance estimate of KL(old || new) from sampled actions.

  Uses k3 = E[(r - 1) - log r] (Schulman 2020), which is non-negative for every sample.

  Args:
    log_ratio: log pi_new(a|s) - log pi_old(a|s), any shape.
  Returns:
    Scalar mean over all samples.
  """
  return jnp.mean(jnp.expm1(log_ratio) - log_ratio)


def approx_kl_k1(log_ratio: jax.Array) -> jax.Array:
  """Naive unbiased estimate k1 = E[-log r] of KL(old || new); can be negative."""
  return -jnp.mean(log_ratio)


def gaussian_kl(
  mean_old: jax.Array, std_old: jax.Array, mean_new: jax.Array, std_new: jax.Array
) -> jax.Array:
  """Exact KL(old || new) of diagonal Gaussians, summed over the action axis (last).

  Returns:
    [...] one KL per state.
  """
  log_std_ratio = jnp.log(std_new) - jnp.log(std_old)
  return jnp.sum(
    log_std_ratio
    + (jnp.square(std_old) + jnp.square(mean_old - mean_new)) / (2.0 * jnp.square(std_new))
    - 0.5,
    axis=-1,
  )


def clip_fraction(ratio: jax.Array, clipping_epsilon: float) -> jax.Array:
  """Fraction of samples whose ratio lies outside [1 - eps, 1 + eps]."""
  return jnp.mean((jnp.abs(ratio - 1.0) > clipping_epsilon).astype(jnp.float32))


def zero_gradient_mask(
  ratio: jax.Array, advantages: jax.Array, clipping_epsilon: float
) -> jax.Array:
  """Per sample, True where the clip has removed the surrogate's gradient.

  min(r A, clip(r) A) takes the clipped, constant branch when the ratio has already moved
  past the band in the direction the advantage rewards: r > 1 + eps with A > 0, or
  r < 1 - eps with A < 0. Such a sample can no longer increase the objective.
  """
  return ((ratio > 1.0 + clipping_epsilon) & (advantages > 0)) | (
    (ratio < 1.0 - clipping_epsilon) & (advantages < 0)
  )


def explained_variance(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """1 - Var[targets - predictions] / Var[targets]: 1 is perfect, 0 is a constant guess.

  Returns NaN when the targets have no variance (nothing to explain).
  """
  target_var = jnp.var(targets)
  return jnp.where(target_var > 0, 1.0 - jnp.var(targets - predictions) / target_var, jnp.nan)


def action_saturation(action: jax.Array, bound: float = 1.0) -> jax.Array:
  """Fraction of action dimensions with |action| >= bound.

  For a clipped Gaussian (bound 1) a dimension at or past the bound is one whose actuator the
  env drives at its limit; for a tanh-squashed one (bound 0.99) one where tanh's slope has
  fallen below 2%, so the policy can hardly move the actuator further out.

  Args:
    action: [..., action_size] actions (a clipped Gaussian's as sampled or clipped alike).
    bound: the distribution's `saturation_bound`.
  Returns:
    Scalar in [0, 1].
  """
  return jnp.mean((jnp.abs(action) >= bound).astype(jnp.float32))


def all_finite(tree) -> jax.Array:
  """[] bool: True when every element of every floating leaf of `tree` is finite."""
  leaves = [
    jnp.ravel(leaf)
    for leaf in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
  ]
  # One reduction over all of them: XLA then computes the flag once, where a chain of
  # per-leaf flags would be recomputed inside every fusion that reads it.
  return jnp.all(jnp.isfinite(jnp.concatenate(leaves))) if leaves else jnp.array(True)
