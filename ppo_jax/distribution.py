"""The policy's action distributions: a diagonal Gaussian, clipped or tanh-squashed at the env.

Both are distributions over a *raw* action that the rollout stores, and `to_env` maps a raw
action to what the environment receives (`distribution_type`, Brax's names):

  "normal"       DiagonalGaussian: raw ~ N(mean, std^2), the env gets clip(raw, -1, 1).
  "tanh_normal"  TanhGaussian: raw ~ N(mean, std^2) is the pre-tanh sample, the env gets
                 tanh(raw) (Brax's NormalTanhDistribution).

Log-probabilities are exact for both: the squashed one's is that of the action tanh(raw),
with the log-det-Jacobian of tanh computed from the kept pre-tanh sample, so nothing is ever
inverted at the bounds. tanh is a bijection, so the KL between two squashed Gaussians equals
the KL between their pre-tanh Gaussians and keeps its closed form. The squashed entropy has no
closed form; it is estimated from one reparametrized sample, as Brax does.
"""

from __future__ import annotations

import math
from typing import ClassVar

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

  # |env action| at or beyond which an action dimension counts as saturated.
  saturation_bound: ClassVar[float] = 1.0

  def log_prob(self, action: jax.Array) -> jax.Array:
    """[...] log-density of the raw `action` [..., action_size], summed over the action axis."""
    z = (action - self.mean) / self.std
    return jnp.sum(-0.5 * jnp.square(z) - jnp.log(self.std) - 0.5 * math.log(2 * math.pi), axis=-1)

  def entropy(self, key: jax.Array | None = None) -> jax.Array:
    """[...] differential entropy, summed over the action axis (exact; `key` is unused)."""
    del key
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
    """[..., action_size] one raw draw per batch element."""
    return self.mean + self.std * jax.random.normal(key, self.mean.shape)

  def mode(self) -> jax.Array:
    """[..., action_size] the raw action of the deterministic policy: the mean."""
    return self.mean

  @staticmethod
  def to_env(action: jax.Array) -> jax.Array:
    """What the environment receives for a raw action: the action clipped to [-1, 1]."""
    return jnp.clip(action, -1.0, 1.0)


def tanh_log_det_jacobian(raw: jax.Array) -> jax.Array:
  """[..., action_size] log |d tanh(raw) / d raw| = log(1 - tanh(raw)^2), computed as
  2 (log 2 - raw - softplus(-2 raw)), which stays finite where tanh(raw) rounds to +-1."""
  return 2.0 * (math.log(2.0) - raw - jax.nn.softplus(-2.0 * raw))


@struct.dataclass
class TanhGaussian(DiagonalGaussian):
  """tanh(u) with u ~ N(mean, diag(std^2)); the raw action is the pre-tanh sample u.

  `kl`, `sample` and `mode` are the pre-tanh Gaussian's: the KL is invariant under the
  bijection, and the deterministic policy's env action is tanh(mean), as in Brax (the
  squashed distribution's median, not its mode).
  """

  # tanh's slope is below 2% beyond 0.99: the policy can hardly push the actuator further.
  saturation_bound: ClassVar[float] = 0.99

  def log_prob(self, action: jax.Array) -> jax.Array:
    """[...] log-density of the env action tanh(`action`), from the pre-tanh `action`."""
    return super().log_prob(action) - jnp.sum(tanh_log_det_jacobian(action), axis=-1)

  def entropy(self, key: jax.Array | None = None) -> jax.Array:
    """[...] one-sample estimate of the squashed entropy (Brax's): H(u) + log|det J|(u) at a
    reparametrized draw u, so E[estimate] = H(tanh(u)) and it has gradients in mean and std.

    Raises:
      ValueError: without a key.
    """
    if key is None:
      raise ValueError("the entropy of a tanh-squashed Gaussian is estimated: it needs a key")
    log_det = jnp.sum(tanh_log_det_jacobian(self.sample(key)), axis=-1)
    return super().entropy() + log_det

  @staticmethod
  def to_env(action: jax.Array) -> jax.Array:
    """What the environment receives for a pre-tanh action: tanh(action)."""
    return jnp.tanh(action)


# config.distribution_type -> the class.
DISTRIBUTIONS = {"normal": DiagonalGaussian, "tanh_normal": TanhGaussian}
