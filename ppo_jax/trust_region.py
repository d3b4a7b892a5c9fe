"""How far an iteration moved the policy, one definition, and the brakes that bound it.

The rollout was taken by the behaviour policy: the old parameters under the old observation
statistics. An iteration changes both: the update moves the parameters, and the normalizer
folds in the rollout's observations before the update (as in Brax). The data vouches only for
policies near the behaviour policy, so the change is measured from it, whole:

  D(theta) = 1/N sum_i KL( pi_behaviour(. | s_i) || pi_theta(. | s_i; new statistics) ),

over the batch's N observations, in closed form from the behaviour policy's mean and std that
the rollout kept (`Batch.mean`, `Batch.std`; of a tanh-squashed Gaussian, the KL of the
pre-tanh Gaussians, which the squash leaves unchanged). `update_kl` reports it, the monitor
watches it, TRPO's line search bounds it by `trpo_max_kl` and the backstop by `max_update_kl`.
The per-epoch diagnostics (`approx_kl`, k3 over a minibatch's sampled actions) and `target_kl`'s
early stop measure each epoch's progress instead: they exist to stop the epochs, and the
sampled estimate is what a minibatch has.

Where a brake bounds D, the statistics' share of the change is removed first: `reexpress` rewrites the
policy's input layer so that the old parameters under the new statistics are the old policy,
exactly for every observation within the normalizer's clip (10 std). A step that the bound
rejects then leaves the behaviour policy itself, up to the clip: the statistics always take
the new observations in (holding them back would hold them back again at the next iteration,
which sees the same drift), and the value network, trained under them, keeps its update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from ppo_jax import normalization
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import Batch, Params

if TYPE_CHECKING:
  from ppo_jax.networks import ActorCritic

# Where a policy's first layer, the one that reads the normalized observation, keeps its weights.
INPUT_LAYER = ("params", "MLP_0", "Dense_0")


def update_kl(
  networks: ActorCritic, policy: Params, normalizer: RunningStatistics, batch: Batch
) -> jax.Array:
  """D(policy): the mean KL from the behaviour policy to `policy` under `normalizer` [N] -> []."""
  distribution = networks.policy(policy, normalizer, batch.obs)
  behaviour = distribution.replace(mean=batch.mean, std=batch.std)
  return jnp.mean(behaviour.kl(distribution))


def _effective(stats: RunningStatistics) -> tuple[jax.Array, jax.Array]:
  """(mean, std) that `normalization.normalize` applies: (0, 1) while nothing has been seen."""
  seen = stats.count > 0
  return jnp.where(seen, stats.mean, 0.0), jnp.where(seen, stats.std, 1.0)


def reexpress(
  policy: Params, old: RunningStatistics, new: RunningStatistics, obs_key: str
) -> Params:
  """The policy parameters under `new` statistics that compute what `policy` computes under
  `old` (for observations within the clip under both).

  The input layer sees z = (x - mu) / sigma; with z = (sigma' z' + mu' - mu) / sigma,
  z @ W + b = z' @ (sigma' / sigma * W) + ((mu' - mu) / sigma @ W + b).
  """
  mean, std = _effective(normalization.select(old, obs_key))
  new_mean, new_std = _effective(normalization.select(new, obs_key))
  layer = policy
  for name in INPUT_LAYER:
    layer = layer[name]
  reexpressed = {
    "kernel": (new_std / std)[:, None] * layer["kernel"],
    "bias": layer["bias"] + ((new_mean - mean) / std) @ layer["kernel"],
  }
  return _replace_at(policy, INPUT_LAYER, {**layer, **reexpressed})


def _replace_at(tree: dict, path: tuple[str, ...], value) -> dict:
  """A copy of the nested dict `tree` with `value` at `path`."""
  if not path:
    return value
  return {**tree, path[0]: _replace_at(tree[path[0]], path[1:], value)}
