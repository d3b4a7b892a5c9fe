"""The policy's action distribution: a diagonal Gaussian, unsquashed.

Actions are sampled unbounded and their log-probabilities are exact; the environment receives
them clipped to [-1, 1]. The KL between two policies then has a closed form, which the
diagnostics and TRPO use.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class DiagonalGaussian:
  """N(mean, diag(std^2)) over the last axis; any leading batch shape.

  Attributes:
    mean: [..., action_size].
    std: [..., action_size], positive.
  """

  mean: jax.Array
  std: jax.Array

  def log_prob(self, action: jax.Array) -> jax.Array:
    """[...] log-density of `action` [..., action_size], summed over the action axis."""
    z = (action - self.mean) / self.std
    return jnp.sum(-0.5 * jnp.square(z) - jnp.log(self.std) - 0.5 * math.log(2 * math.pi), axis=-1)

  def entropy(self) -> jax.Array:
    """[...] differential entropy, summed over the action axis."""
    return jnp.sum(jnp.log(self.std) + 0.5 * (1.0 + math.log(2 * math.pi)), axis=-1)

  def kl(self, other: DiagonalGaussian) -> jax.Array:
    """[...] exact KL(self || other), summed over the action axis."""
    log_std_ratio = jnp.log(other.std) - jnp.log(self.std)
    return jnp.sum(
      log_std_ratio
      + (jnp.square(self.std) + jnp.square(self.mean - other.mean)) / (2.0 * jnp.square(other.std))
      - 0.5,
      axis=-1,
    )

  def sample(self, key: jax.Array) -> jax.Array:
    """[..., action_size] one draw per batch element."""
    return self.mean + self.std * jax.random.normal(key, self.mean.shape)

  def mode(self) -> jax.Array:
    """[..., action_size] the most likely action: the mean."""
    return self.mean


def to_env(action: jax.Array) -> jax.Array:
  """What the environment receives for a sampled action: the action clipped to [-1, 1]."""
  return jnp.clip(action, -1.0, 1.0)
