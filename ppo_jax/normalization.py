"""Running observation statistics (Welford / Chan's parallel update), kept in the train state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStatistics:
  """Count, mean and sum of squared deviations of everything seen so far.

  Attributes:
    count: [] number of observations folded in.
    mean: [obs_size] their mean.
    m2: [obs_size] sum of squared deviations from the mean.
  """

  count: jax.Array
  mean: jax.Array
  m2: jax.Array

  @property
  def std(self) -> jax.Array:
    variance = self.m2 / jnp.maximum(self.count, 1.0)
    return jnp.sqrt(jnp.maximum(variance, 1e-6))


def init(obs_size: int) -> RunningStatistics:
  zeros = jnp.zeros((obs_size,), jnp.float32)
  return RunningStatistics(count=jnp.zeros((), jnp.float32), mean=zeros, m2=zeros)


def update(stats: RunningStatistics, batch: jax.Array) -> RunningStatistics:
  """Folds a batch [..., obs_size] into the statistics (Chan et al.'s pairwise merge)."""
  batch = batch.reshape(-1, batch.shape[-1])
  n = jnp.asarray(batch.shape[0], jnp.float32)
  batch_mean = jnp.mean(batch, axis=0)
  batch_m2 = jnp.sum(jnp.square(batch - batch_mean[None]), axis=0)
  count = stats.count + n
  delta = batch_mean - stats.mean
  mean = stats.mean + delta * n / count
  m2 = stats.m2 + batch_m2 + jnp.square(delta) * stats.count * n / count
  return RunningStatistics(count=count, mean=mean, m2=m2)


def normalize(stats: RunningStatistics, obs: jax.Array, clip: float = 10.0) -> jax.Array:
  """Standardizes observations [..., obs_size]; identity while nothing has been seen.

  The identity skips the clip too: with normalize_observations=False the statistics stay
  empty, and the networks must then see the raw observations, large ones included.
  """
  seen = stats.count > 0
  leading = (1,) * (obs.ndim - 1)
  mean = jnp.where(seen, stats.mean, 0.0).reshape(*leading, -1)
  std = jnp.where(seen, stats.std, 1.0).reshape(*leading, -1)
  return jnp.where(seen, jnp.clip((obs - mean) / std, -clip, clip), obs)
