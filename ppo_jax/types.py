"""The data that flows through a training iteration. Imports nothing of the project.

Slices that a scan stacks are NamedTuples, time-major: a rollout is [T, B, ...], a batch of
flat samples [N, ...].
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from flax import struct

Params = Any
Metrics = dict[str, jax.Array]


class Transition(NamedTuple):
  """One rollout step per environment; a rollout stacks them time-major, [T, B, ...].

  Attributes:
    obs: [..., obs_size] raw observation the action was chosen from (a dict of them for
      dict observations).
    action: [..., action_size] the policy's sample, before the env's bounds are applied.
    log_prob: [...] log-probability of `action` under the rollout policy.
    mean: [..., action_size] rollout policy mean (for the exact KL).
    std: [..., action_size] rollout policy standard deviation.
    reward: [...] reward of the step (before reward_scaling).
    termination: [...] 1.0 where the step ended the episode through the task.
    truncation: [...] 1.0 where the step hit the time limit.
    next_obs: [..., obs_size] (or a dict) true next observation (the final one where the
      episode ended).
  """

  obs: Any
  action: jax.Array
  log_prob: jax.Array
  mean: jax.Array
  std: jax.Array
  reward: jax.Array
  termination: jax.Array
  truncation: jax.Array
  next_obs: Any


class Batch(NamedTuple):
  """Flat training samples, [N, ...]: a transition plus its GAE results."""

  obs: Any
  action: jax.Array
  log_prob: jax.Array
  mean: jax.Array
  std: jax.Array
  value: jax.Array
  advantage: jax.Array
  target: jax.Array


class Segments(NamedTuple):
  """Whole rollout segments, segment-major [S, T, ...], for GAE on each minibatch.

  Attributes:
    transitions: [S, T, ...] every segment's steps in order.
    value: [S, T] values of the rollout's value network (value clipping's reference).
    next_value: [S, T] its values of the true next observations.
  """

  transitions: Transition
  value: jax.Array
  next_value: jax.Array


@struct.dataclass
class ActorCriticParams:
  policy: Params
  value: Params
