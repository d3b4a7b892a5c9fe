"""Running observation statistics (Welford / Chan's parallel update), kept in the train state.

An observation is an array or a dict of arrays (one entry per name, as Playground's
`{"state": ..., "privileged_state": ...}`); the statistics hold one mean and m2 per entry, and
a policy or value network selects its entry with `entry` (Brax's rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Observation = jax.Array | Mapping[str, jax.Array]


@struct.dataclass
class RunningStatistics:
  """Count, mean and sum of squared deviations of everything seen so far.

  Attributes:
    count: [] number of observations folded in.
    mean: [obs_size] their mean (a dict of them for dict observations).
    m2: [obs_size] sum of squared deviations from the mean (likewise).
  """

  count: jax.Array
  mean: Any
  m2: Any

  @property
  def std(self) -> Any:
    count = jnp.maximum(self.count, 1.0)
    return jax.tree.map(lambda m2: jnp.sqrt(jnp.maximum(m2 / count, 1e-6)), self.m2)


def entry(tree: Any, key: str) -> Any:
  """Brax's rule for an observation key: a dict's entry `key`; an array (or size) itself."""
  return tree[key] if isinstance(tree, Mapping) else tree


def select(stats: RunningStatistics, key: str) -> RunningStatistics:
  """The statistics of observation entry `key` (all of them for array observations)."""
  return stats.replace(mean=entry(stats.mean, key), m2=entry(stats.m2, key))


def init(observation_size: int | Mapping[str, int]) -> RunningStatistics:
  """Empty statistics for observations of this size (a dict of sizes for dict observations)."""
  zeros = jax.tree.map(lambda size: jnp.zeros((size,), jnp.float32), observation_size)
  return RunningStatistics(count=jnp.zeros((), jnp.float32), mean=zeros, m2=zeros)


def update(stats: RunningStatistics, batch: Observation) -> RunningStatistics:
  """Folds a batch [..., obs_size] (per entry) into the statistics (Chan et al.'s pairwise
  merge)."""
  n = jnp.asarray(jax.tree.leaves(batch)[0][..., 0].size, jnp.float32)
  count = stats.count + n

  def merge(mean, m2, x):
    x = x.reshape(-1, x.shape[-1])
    batch_mean = jnp.mean(x, axis=0)
    batch_m2 = jnp.sum(jnp.square(x - batch_mean[None]), axis=0)
    delta = batch_mean - mean
    return mean + delta * n / count, m2 + batch_m2 + jnp.square(delta) * stats.count * n / count

  merged = jax.tree.map(merge, stats.mean, stats.m2, batch)
  is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
  mean = jax.tree.map(lambda pair: pair[0], merged, is_leaf=is_pair)
  m2 = jax.tree.map(lambda pair: pair[1], merged, is_leaf=is_pair)
  return RunningStatistics(count=count, mean=mean, m2=m2)


def normalize(stats: RunningStatistics, obs: Observation, clip: float = 10.0) -> Observation:
  """Standardizes observations [..., obs_size] (per entry); identity while nothing has been seen.

  The identity skips the clip too: with normalize_observations=False the statistics stay
  empty, and the networks must then see the raw observations, large ones included.
  """
  seen = stats.count > 0

  def standardize(x, mean, std):
    leading = (1,) * (x.ndim - 1)
    mean = jnp.where(seen, mean, 0.0).reshape(*leading, -1)
    std = jnp.where(seen, std, 1.0).reshape(*leading, -1)
    return jnp.where(seen, jnp.clip((x - mean) / std, -clip, clip), x)

  return jax.tree.map(standardize, obs, stats.mean, stats.std)
