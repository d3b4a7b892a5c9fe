"""The data that flows through training: transitions, the train state, per-update metrics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax
from flax import struct

from envs import EnvState
from ppo_jax.monitor import MonitorState
from ppo_jax.normalization import RunningStatistics

Params = Any


class Transition(NamedTuple):
  """One rollout step per environment; a rollout stacks them time-major, [T, B, ...].

  Attributes:
    obs: [..., obs_size] raw observation the action was chosen from.
    action: [..., action_size] Gaussian sample, before clipping to the action bounds.
    log_prob: [...] log-probability of `action` under the rollout policy.
    mean: [..., action_size] rollout policy mean (for the exact Gaussian KL).
    std: [..., action_size] rollout policy standard deviation.
    reward: [...] reward of the step (scaled by reward_scaling).
    termination: [...] 1.0 where the step ended the episode through the task.
    truncation: [...] 1.0 where the step hit the time limit.
    next_obs: [..., obs_size] true next observation (the final one where the episode ended).
  """

  obs: jax.Array
  action: jax.Array
  log_prob: jax.Array
  mean: jax.Array
  std: jax.Array
  reward: jax.Array
  termination: jax.Array
  truncation: jax.Array
  next_obs: jax.Array


class Batch(NamedTuple):
  """Flat training samples, [N, ...]: a transition plus its GAE results."""

  obs: jax.Array
  action: jax.Array
  log_prob: jax.Array
  mean: jax.Array
  std: jax.Array
  value: jax.Array
  advantage: jax.Array
  target: jax.Array


@struct.dataclass
class ActorCriticParams:
  policy: Params
  value: Params


@struct.dataclass
class TrainState:
  """Everything a run carries from one iteration to the next (all on the device).

  Attributes:
    params: policy and value network parameters.
    opt_state: optimizer state.
    normalizer: running observation statistics.
    learning_rate: [] current learning rate (moved by the "adaptive_kl" schedule).
    env_state: [num_envs, ...] state of every training environment.
    key: PRNG key.
    iteration: [] completed training iterations.
    monitor: the failure labels' history and the largest-KL update's policies.
  """

  params: ActorCriticParams
  opt_state: optax.OptState
  normalizer: RunningStatistics
  learning_rate: jax.Array
  env_state: EnvState
  key: jax.Array
  iteration: jax.Array
  monitor: MonitorState
