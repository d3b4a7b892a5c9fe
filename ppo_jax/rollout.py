"""Scanned, vmapped environment stepping: training rollouts, evaluation and episode traces."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from envs import Environment, EnvState
from ppo_jax import sharding
from ppo_jax.networks import ActorCritic
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import Params, Transition


class EpisodeStats(NamedTuple):
  """Sums over the episodes that finished during a rollout (all scalars).

  Attributes:
    episodes: episodes that ended.
    return_sum: their returns, summed.
    length_sum: their lengths (agent steps), summed.
    length_min: the shortest of them (inf when none ended).
    terminations: of them, those ended by the task (falls).
    truncations: of them, those cut by the time limit.
    metrics: per env metric, the episodes' per-step means, summed.
  """

  episodes: jax.Array
  return_sum: jax.Array
  length_sum: jax.Array
  length_min: jax.Array
  terminations: jax.Array
  truncations: jax.Array
  metrics: dict[str, jax.Array]

  @classmethod
  def zeros(cls, metric_names) -> EpisodeStats:
    zero = jnp.zeros((), jnp.float32)
    return cls(zero, zero, zero, jnp.full((), jnp.inf), zero, zero, {n: zero for n in metric_names})

  @staticmethod
  def reduce(stacked: EpisodeStats) -> EpisodeStats:
    """Stats stacked over rollouts [U] -> the stats of them all."""
    totals = jax.tree.map(jnp.sum, stacked)
    return totals._replace(length_min=jnp.min(stacked.length_min))


def env_step(
  env: Environment, state: EnvState, action: jax.Array, auto_reset: bool = True
) -> EnvState:
  """Steps a batch of envs [B, ...] with env actions, held within the bounds [-1, 1]."""
  step = functools.partial(env.step, auto_reset=auto_reset)
  return jax.vmap(step)(state, jnp.clip(action, -1.0, 1.0))


def _finished(state: EnvState, next_state: EnvState, stats: EpisodeStats) -> EpisodeStats:
  done = next_state.done
  length = state.steps + 1
  episode_means = {
    name: (state.episode_metrics[name] + next_state.metrics[name]) / length
    for name in stats.metrics
  }
  return EpisodeStats(
    episodes=stats.episodes + jnp.sum(done),
    return_sum=stats.return_sum + jnp.sum(done * (state.episode_return + next_state.reward)),
    length_sum=stats.length_sum + jnp.sum(done * length),
    length_min=jnp.minimum(stats.length_min, jnp.min(jnp.where(done > 0, length, jnp.inf))),
    terminations=stats.terminations + jnp.sum(next_state.termination),
    truncations=stats.truncations + jnp.sum(next_state.truncation),
    metrics={
      name: stats.metrics[name] + jnp.sum(done * mean) for name, mean in episode_means.items()
    },
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
    distribution = networks.policy(policy_params, normalizer, state.obs)
    action = distribution.sample(step_key)
    next_state = env_step(env, state, distribution.to_env(action))
    transition = Transition(
      obs=state.obs,
      action=action,
      log_prob=distribution.log_prob(action),
      mean=distribution.mean,
      std=distribution.std,
      reward=next_state.reward,
      termination=next_state.termination,
      truncation=next_state.truncation,
      next_obs=next_state.final_obs,
    )
    return (next_state, _finished(state, next_state, stats)), transition

  (env_state, stats), transitions = jax.lax.scan(
    step, (env_state, EpisodeStats.zeros(env_state.metrics)), jax.random.split(key, length)
  )
  return env_state, transitions, stats


def collect(
  env: Environment,
  networks: ActorCritic,
  policy_params: Params,
  normalizer: RunningStatistics,
  env_state: EnvState,
  key: jax.Array,
  unrolls: int,
  length: int,
) -> tuple[EnvState, Transition, EpisodeStats]:
  """`unrolls` unrolls of `length` steps of all envs, one after the other.

  Returns:
    (env_state after them, transitions [length, unrolls * B, ...] with every unroll a
    column of its own, the finished-episode sums of them all).
  """

  def one_unroll(env_state, unroll_key):
    env_state, transitions, stats = unroll(
      env, networks, policy_params, normalizer, env_state, unroll_key, length
    )
    return env_state, (transitions, stats)

  env_state, (transitions, stats) = jax.lax.scan(
    one_unroll, env_state, jax.random.split(key, unrolls)
  )
  # [U, T, B, ...] -> [T, U * B, ...]: every segment is a column of the GAE.
  transitions = jax.tree.map(
    lambda x: jnp.swapaxes(x, 0, 1).reshape(x.shape[1], -1, *x.shape[3:]), transitions
  )
  return env_state, transitions, EpisodeStats.reduce(stats)


class Trace(NamedTuple):
  """One step of every env; `trace_episodes` stacks it to [T, N, ...].

  Attributes:
    observations: [N, obs] observation the action was chosen from (a dict of them for dict
      observations).
    actions: [N, act] action sent to the env, within the bounds [-1, 1].
    rewards: [N] reward of the step.
    terminations: [N] the step ended the episode through the task.
    truncations: [N] the step hit the time limit.
    alive: [N] the step belongs to the env's first episode.
    saturated: [N] fraction of the action's dimensions at or beyond the saturation bound.
    env_params: each env's randomized system leaves, {leaf path: [N, ...]} once for the whole
      trace (not per step); empty without domain randomization.
  """

  observations: Any
  actions: jax.Array
  rewards: jax.Array
  terminations: jax.Array
  truncations: jax.Array
  alive: jax.Array
  saturated: jax.Array
  env_params: dict[str, jax.Array] | None = None


def trace_episodes(
  env: Environment,
  policy: Callable[[jax.Array, jax.Array], jax.Array],
  key: jax.Array,
  num_episodes: int,
  record: Callable[[Any], Any] | None = None,
  saturation_bound: float = 1.0,
) -> tuple[Trace, Any]:
  """Runs one episode in each of `num_episodes` fresh envs and records every step.

  At most `env.max_episode_steps` steps, so every env ends its first episode. An env whose
  episode has ended is held at its last live state (no auto-reset: the loop neither traces nor
  runs a reset); its later steps are taken again from there but are not alive, and the loop
  stops as soon as no env is alive: the entries of steps never taken are zero and not alive.
  Two policies given the same key meet the same initial states and the same noise.

  Args:
    policy: policy(obs [N, obs], key) -> env action [N, act] (`make_policy`'s; the env clips).
    record: optional record(core state of env 0) -> what to keep of it before each step
      (e.g. render states for a video).
    saturation_bound: |action| from which a dimension counts as saturated (the policy
      distribution's `saturation_bound`).
  Returns:
    (trace [T, N, ...], the stacked records [T, ...] or None), T = env.max_episode_steps.
  """
  reset_key, policy_key = jax.random.split(key)
  params = env.randomize(jax.random.fold_in(reset_key, 1), num_episodes)
  state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes), params)
  state = sharding.split_envs(state)  # under an envs layout, each device runs its envs
  keys = jax.random.split(policy_key, env.max_episode_steps)

  def step(state, alive, step_key):
    action = policy(state.obs, step_key)
    next_state = env_step(env, state, action, auto_reset=False)
    trace = Trace(
      observations=state.obs,
      actions=jnp.clip(action, -1.0, 1.0),
      rewards=next_state.reward,
      terminations=next_state.termination > 0,
      truncations=next_state.truncation > 0,
      alive=alive,
      saturated=jnp.mean((jnp.abs(action) >= saturation_bound).astype(jnp.float32), axis=-1),
    )
    kept = record(jax.tree.map(lambda x: x[0], state.core)) if record is not None else None
    next_alive = alive & (next_state.done == 0)
    held = jax.vmap(optax.tree.where)(next_alive, next_state, state)
    return held, next_alive, (trace, kept)

  def cond(carry):
    t, _, alive, _ = carry
    return (t < env.max_episode_steps) & jnp.any(alive)

  def body(carry):
    t, state, alive, outputs = carry
    state, next_alive, out = step(state, alive, keys[t])
    outputs = jax.tree.map(lambda buffer, x: buffer.at[t].set(x), outputs, out)
    return t + 1, state, next_alive, outputs

  # The buffers' shapes, read off the reset state rather than traced from `step`, so that the
  # env step is traced once (in the loop's body): tracing it is most of the evaluator's lowering.
  alive = jnp.ones((num_episodes,), bool)
  per_env = lambda dtype: jax.ShapeDtypeStruct((num_episodes,), dtype)  # noqa: E731
  shapes = Trace(
    observations=state.obs,
    actions=jax.ShapeDtypeStruct((num_episodes, env.action_size), jnp.float32),
    rewards=state.reward,
    terminations=per_env(bool),
    truncations=per_env(bool),
    alive=alive,
    saturated=per_env(jnp.float32),
  )
  first_core = jax.tree.map(lambda x: x[0], state.core)
  kept = jax.eval_shape(record, first_core) if record is not None else None
  outputs = jax.tree.map(
    lambda s: jnp.zeros((env.max_episode_steps, *s.shape), s.dtype), (shapes, kept)
  )
  _, _, _, (trace, kept) = jax.lax.while_loop(cond, body, (0, state, alive, outputs))
  return trace._replace(env_params=params), kept


def trace_arrays(trace: Trace) -> dict[str, np.ndarray]:
  """A fetched trace as named arrays for `np.savez`: a dict observation's entries are
  "observations/<entry>", the randomized system leaves "env_params/<leaf path>" [N, ...]."""
  flat, _ = jax.tree_util.tree_flatten_with_path(trace._asdict())
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf) for path, leaf in flat
  }


class Episodes(NamedTuple):
  """Each env's first episode in a trace.

  Attributes:
    returns: [N] undiscounted return.
    lengths: [N] agent steps.
    terminated: [N] ended by the task (a fall).
    truncated: [N] cut by the time limit.
    saturation: [] fraction of action dimensions at the bounds, over all their steps.
  """

  returns: jax.Array
  lengths: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  saturation: jax.Array


def first_episodes(trace: Trace) -> Episodes:
  """The first episode of every env in a trace [T, N] (jnp; on the device or on numpy)."""
  alive = trace.alive
  return Episodes(
    returns=jnp.sum(jnp.where(alive, trace.rewards, 0.0), axis=0),
    lengths=jnp.sum(alive, axis=0),
    terminated=jnp.any(alive & trace.terminations, axis=0),
    truncated=jnp.any(alive & trace.truncations, axis=0),
    saturation=jnp.sum(jnp.where(alive, trace.saturated, 0.0)) / jnp.sum(alive),
  )


def summarize(episodes: Episodes) -> dict[str, Any]:
  """Fetched episodes as JSON-ready lists and their means (host side)."""
  returns, lengths, terminated, truncated = (
    np.asarray(x)
    for x in (episodes.returns, episodes.lengths, episodes.terminated, episodes.truncated)
  )
  return {
    "returns": returns.tolist(),
    "lengths": lengths.tolist(),
    "terminated": terminated.tolist(),
    "truncated": truncated.tolist(),
    "mean_return": float(np.mean(returns)),
    "std_return": float(np.std(returns)),
    "mean_length": float(np.mean(lengths)),
    "termination_rate": float(np.mean(terminated)),
    "action_saturation": float(episodes.saturation),
  }


# Evaluation metric -> the `summarize` entry it is.
EVAL_METRICS = {
  "episode_return": "mean_return",
  "episode_return_std": "std_return",
  "episode_length": "mean_length",
  "termination_rate": "termination_rate",
  "action_saturation": "action_saturation",
}


def eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
  """An evaluation's metrics, "eval/<name>", from `summarize`'s result."""
  return {f"eval/{name}": summary[key] for name, key in EVAL_METRICS.items()}
