"""Scanned, vmapped environment stepping: training unrolls and deterministic evaluation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs import Environment, EnvState
from ppo_jax.networks import ActorCritic, gaussian_log_prob
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import Params, Transition


class EpisodeStats(NamedTuple):
  """Sums over the episodes that finished during a rollout (all scalars)."""

  episodes: jax.Array
  return_sum: jax.Array
  length_sum: jax.Array
  terminations: jax.Array
  truncations: jax.Array

  @classmethod
  def zeros(cls) -> EpisodeStats:
    return cls(*(jnp.zeros((), jnp.float32) for _ in cls._fields))


def sample_action(
  networks: ActorCritic,
  policy_params: Params,
  normalizer: RunningStatistics,
  obs: jax.Array,
  key: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Samples from the Gaussian policy: (action, log_prob, mean, std), action unclipped."""
  mean, std = networks.policy(policy_params, normalizer, obs)
  action = mean + std * jax.random.normal(key, mean.shape)
  return action, gaussian_log_prob(action, mean, std), mean, std


def env_step(env: Environment, state: EnvState, action: jax.Array) -> EnvState:
  """Steps a batch of envs [B, ...] with actions clipped to the bounds [-1, 1]."""
  return jax.vmap(env.step)(state, jnp.clip(action, -1.0, 1.0))


def _finished(state: EnvState, next_state: EnvState, stats: EpisodeStats) -> EpisodeStats:
  done = next_state.done
  return EpisodeStats(
    episodes=stats.episodes + jnp.sum(done),
    return_sum=stats.return_sum + jnp.sum(done * (state.episode_return + next_state.reward)),
    length_sum=stats.length_sum + jnp.sum(done * (state.steps + 1)),
    terminations=stats.terminations + jnp.sum(next_state.termination),
    truncations=stats.truncations + jnp.sum(next_state.truncation),
  )


def unroll(
  env: Environment,
  networks: ActorCritic,
  policy_params: Params,
  normalizer: RunningStatistics,
  env_state: EnvState,
  key: jax.Array,
  length: int,
) -> tuple[EnvState, Transition, EpisodeStats]:
  """Runs the sampling policy for `length` steps in every env.

  Args:
    env_state: [B, ...] batched env state.
  Returns:
    (env_state after the unroll, transitions [length, B, ...], finished-episode sums).
  """

  def step(carry, step_key):
    state, stats = carry
    action, log_prob, mean, std = sample_action(
      networks, policy_params, normalizer, state.obs, step_key
    )
    next_state = env_step(env, state, action)
    transition = Transition(
      obs=state.obs,
      action=action,
      log_prob=log_prob,
      mean=mean,
      std=std,
      reward=next_state.reward,
      termination=next_state.termination,
      truncation=next_state.truncation,
      next_obs=next_state.final_obs,
    )
    return (next_state, _finished(state, next_state, stats)), transition

  (env_state, stats), transitions = jax.lax.scan(
    step, (env_state, EpisodeStats.zeros()), jax.random.split(key, length)
  )
  return env_state, transitions, stats


class EvalMetrics(NamedTuple):
  episode_return: jax.Array
  episode_return_std: jax.Array
  episode_length: jax.Array
  termination_rate: jax.Array


def evaluate(
  env: Environment,
  networks: ActorCritic,
  policy_params: Params,
  normalizer: RunningStatistics,
  key: jax.Array,
  num_envs: int,
  deterministic: bool,
) -> EvalMetrics:
  """Runs one full episode in each of `num_envs` fresh envs and reports its return.

  Steps taken after an env's first episode ends are not counted.
  """
  reset_key, policy_key = jax.random.split(key)
  state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
  zeros = jnp.zeros((num_envs,), jnp.float32)

  def step(carry, step_key):
    state, alive, ret, length, terminated = carry
    action, _, mean, _ = sample_action(networks, policy_params, normalizer, state.obs, step_key)
    state = env_step(env, state, mean if deterministic else action)
    ret = ret + alive * state.reward
    length = length + alive
    terminated = terminated + alive * state.termination
    alive = alive * (1.0 - state.done)
    return (state, alive, ret, length, terminated), None

  carry = (state, jnp.ones((num_envs,), jnp.float32), zeros, zeros, zeros)
  (_, _, ret, length, terminated), _ = jax.lax.scan(
    step, carry, jax.random.split(policy_key, env.max_episode_steps)
  )
  return EvalMetrics(
    episode_return=jnp.mean(ret),
    episode_return_std=jnp.std(ret),
    episode_length=jnp.mean(length),
    termination_rate=jnp.mean(terminated),
  )
