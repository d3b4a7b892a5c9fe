"""The device side of training: the train state, one training iteration, the chunk, the evaluator.

One iteration, `train_step`, reads top to bottom:

  collect     rollout.collect: unrolls of the vmapped env step and policy sampling
  advantages  observation statistics take in the rollout; values and GAE, once per rollout
              (or on every minibatch too, with `recompute_advantages`)
  update      [TRPO's policy step, then] epochs x minibatch updates (`ppo_jax.update`)
  finite      a NaN or Inf anywhere skips the whole update: the learner stays as it was
  monitor     the failure labels and the largest-KL snapshots (`ppo_jax.monitor`)
  metrics     every diagnostic, reduced on the device

`make_train_chunk` scans `iterations_per_chunk` of them into one compiled program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from ppo_jax import diagnostics, losses, monitor, normalization, rollout, trpo, trust_region, update
from ppo_jax.batch import make_update_data, with_fresh_advantages
from ppo_jax.config import PPOConfig
from ppo_jax.distribution import DiagonalGaussian
from ppo_jax.networks import ActorCritic, make_actor_critic, make_policy
from ppo_jax.normalization import RunningStatistics
from ppo_jax.rollout import EpisodeStats
from ppo_jax.types import ActorCriticParams, Batch, Metrics, Params, Segments, Transition


@struct.dataclass
class TrainState:
  """Everything a run carries from one iteration to the next (all on the device).

  Attributes:
    params: policy and value network parameters.
    opt_state: optimizer state.
    normalizer: running observation statistics.
    learning_rate: [] current learning rate (moved by the "ADAPTIVE_KL" schedule).
    env_state: [num_envs, ...] state of every training environment.
    key: PRNG key.
    iteration: [] completed training iterations.
    monitor: the failure labels' history and the largest-KL update's policies.
  """

  params: ActorCriticParams
  opt_state: optax.OptState
  normalizer: RunningStatistics
  learning_rate: jax.Array
  env_state: envs.EnvState
  key: jax.Array
  iteration: jax.Array
  monitor: monitor.MonitorState


def make_env(cfg: PPOConfig) -> envs.Environment:
  """The configured environment."""
  return envs.make(
    cfg.env,
    episode_length=cfg.episode_length,
    action_repeat=cfg.action_repeat,
    backend=cfg.env_backend,
    randomization_fn=envs.RANDOMIZATIONS.get(cfg.randomization),
  )


def make_env_and_networks(cfg: PPOConfig) -> tuple[envs.Environment, ActorCritic]:
  """The configured environment and the networks sized for it."""
  env = make_env(cfg)
  return env, make_actor_critic(cfg, env.observation_size, env.action_size)


def init_state(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic, key: jax.Array | None = None
) -> TrainState:
  """Fresh train state from `key` (by default `cfg.seed`'s); jittable and vmappable over keys."""
  key = jax.random.PRNGKey(cfg.seed) if key is None else key
  key, params_key, env_key = jax.random.split(key, 3)
  params = networks.init(params_key)
  normalizer = normalization.init(env.observation_size)
  # Each env's randomized system (if any) from a key of its own, leaving the other streams be.
  env_params = env.randomize(jax.random.fold_in(env_key, 1), cfg.num_envs)
  env_state = jax.jit(jax.vmap(env.reset))(jax.random.split(env_key, cfg.num_envs), env_params)
  state = TrainState(
    params=params,
    opt_state=update.make_optimizer(cfg).init(params),
    normalizer=normalizer,
    learning_rate=jnp.asarray(cfg.learning_rate, jnp.float32),
    env_state=env_state,
    key=key,
    iteration=jnp.zeros((), jnp.int32),
    monitor=monitor.init(cfg, monitor.PolicySnapshot(params.policy, normalizer)),
  )
  # One buffer per leaf (reset returns obs and final_obs as one), so the state can be donated.
  return jax.tree.map(jnp.copy, state)


def measure_update(
  networks: ActorCritic,
  clipping_epsilon: float,
  policy_params: Params,
  normalizer: RunningStatistics,
  batch: Batch,
) -> Metrics:
  """The update as a whole: the rollout policy against the updated one, over the batch
  (`update_kl` is `trust_region.update_kl`; `update_approx_kl` its k3 estimate from the
  sampled actions, as the epochs' `approx_kl`)."""
  distribution = networks.policy(policy_params, normalizer, batch.obs)
  log_ratio = distribution.log_prob(batch.action) - batch.log_prob
  return {
    "update_kl": trust_region.update_kl(networks, policy_params, normalizer, batch),
    "update_approx_kl": diagnostics.approx_kl(log_ratio),
    "update_clip_fraction": diagnostics.clip_fraction(jnp.exp(log_ratio), clipping_epsilon),
    "update_action_std": jnp.mean(distribution.std),
  }


def rollout_metrics(
  stats: EpisodeStats, transitions: Transition, distribution: type[DiagonalGaussian]
) -> Metrics:
  """What the rollout saw: finished episodes, terminations, saturation, the env's metrics.

  Saturation is measured on the env actions against the policy distribution's bound;
  `action_abs_mean` on the raw actions (before the clip or the squash)."""
  episodes = stats.episodes
  per_episode = lambda total: jnp.where(episodes > 0, total / jnp.maximum(episodes, 1.0), jnp.nan)  # noqa: E731
  return {
    "episode_return": per_episode(stats.return_sum),
    "episode_length": per_episode(stats.length_sum),
    "episode_length_min": jnp.where(episodes > 0, stats.length_min, jnp.nan),
    "episodes": episodes,
    "terminations": stats.terminations,
    "truncations": stats.truncations,
    "termination_rate": per_episode(stats.terminations),
    "action_saturation": diagnostics.action_saturation(
      distribution.to_env(transitions.action), distribution.saturation_bound
    ),
    "action_abs_mean": jnp.mean(jnp.abs(transitions.action)),
    **{f"env/{name}": per_episode(total) for name, total in stats.metrics.items()},
  }


def learn(
  cfg: PPOConfig,
  networks: ActorCritic,
  loss_fn: update.LossFn,
  policy_step: Callable | None,
  state: TrainState,
  normalizer: RunningStatistics,
  batch: Batch,
  minibatch_data: Batch | Segments,
  key: jax.Array,
) -> tuple[update.Learner, update.UpdateMetrics, Metrics]:
  """The update of an iteration: [TRPO's policy step, then] the minibatch epochs over
  `minibatch_data` [, then the trust-region backstop on the policy].

  Returns:
    (the learner after it, the minibatch metrics [epochs, minibatches], TRPO's and the
    backstop's metrics).
  """
  params, step_metrics = state.params, {}
  if cfg.algorithm == "trpo" or cfg.max_update_kl is not None:  # the brakes bound the whole
    # change from the behaviour policy: the statistics' share is taken out first.
    policy = trust_region.reexpress(params.policy, state.normalizer, normalizer, cfg.policy_obs_key)
    params = params.replace(policy=policy)
  if policy_step is not None:  # TRPO: the policy steps first; the epochs below fit the value
    params, step_metrics = policy_step(params, normalizer, batch)
  learning_rate = update.scheduled_learning_rate(cfg, state.iteration, state.learning_rate)
  learner = update.Learner(params, state.opt_state, learning_rate)
  optimizer = update.make_optimizer(cfg)
  learner, updates = update.epochs(
    cfg, loss_fn, optimizer, learner, normalizer, minibatch_data, key
  )
  if cfg.max_update_kl is not None:
    policy, backstop_metrics = update.backstop(
      cfg, networks, params.policy, learner.params.policy, normalizer, batch
    )
    learner = learner._replace(params=learner.params.replace(policy=policy))
    step_metrics = {**step_metrics, **backstop_metrics}
  return learner, updates, step_metrics


def train_step(
  state: TrainState,
  *,
  cfg: PPOConfig,
  env: envs.Environment,
  networks: ActorCritic,
  loss_fn: update.LossFn,
  policy_step: Callable | None,
) -> tuple[TrainState, Metrics]:
  """One training iteration: state -> (state, metrics). See the module docstring."""
  key, rollout_key, sgd_key = jax.random.split(state.key, 3)

  # Collect.
  env_state, transitions, stats = rollout.collect(
    env,
    networks,
    state.params.policy,
    state.normalizer,
    state.env_state,
    rollout_key,
    cfg.unrolls_per_iteration,
    cfg.unroll_length,
  )

  # Advantages. As in Brax, the statistics take in the rollout before the update; the first
  # minibatch's ratio then also measures that shift of the policy's input.
  normalizer = state.normalizer
  if cfg.normalize_observations:
    normalizer = normalization.update(normalizer, transitions.obs)
  batch, data = make_update_data(cfg, networks, state.params.value, normalizer, transitions)

  # Update.
  learner, updates, step_metrics = learn(
    cfg, networks, loss_fn, policy_step, state, normalizer, batch, data, sgd_key
  )
  measured = measure_update(
    networks, cfg.clipping_epsilon, learner.params.policy, normalizer, batch
  )

  # Finite check: a NaN or Inf anywhere skips the whole update; the learner stays as it was.
  new = (learner.params, learner.opt_state, normalizer, learner.learning_rate)
  finite = diagnostics.all_finite((transitions, updates.loss.total_loss, updates.grad_norm, new))
  old = (state.params, state.opt_state, state.normalizer, state.learning_rate)
  params, opt_state, normalizer, learning_rate = optax.tree.where(finite, new, old)

  # Monitor.
  rollout_stats = rollout_metrics(stats, transitions, networks.distribution)
  signals = monitor.Signals(
    update_kl=measured["update_kl"],
    clip_fraction=measured["update_clip_fraction"],
    action_std=measured["update_action_std"],
    episode_return=rollout_stats["episode_return"],
    finite=finite,
  )
  before = monitor.PolicySnapshot(state.params.policy, state.normalizer)
  after = monitor.PolicySnapshot(params.policy, normalizer)
  monitor_state, labels = monitor.watch(
    cfg, state.monitor, signals, state.iteration + 1, before, after
  )

  # Metrics.
  state = state.replace(
    params=params,
    opt_state=opt_state,
    normalizer=normalizer,
    learning_rate=learning_rate,
    env_state=env_state,
    key=key,
    iteration=state.iteration + 1,
    monitor=monitor_state,
  )
  metrics = {
    **update.reduce_epochs(updates),
    **step_metrics,
    **measured,
    **rollout_stats,
    **labels,
    "nonfinite_rollout": ~diagnostics.all_finite(transitions),
  }
  return state, metrics


def make_loss(cfg: PPOConfig, networks: ActorCritic) -> update.LossFn:
  """The minibatch loss of `cfg.algorithm`: PPO's objective, or TRPO's value fit."""
  objective = trpo.value_fit_loss if cfg.algorithm == "trpo" else losses.ppo_loss
  loss_fn = functools.partial(
    objective,
    networks=networks,
    clipping_epsilon=cfg.clipping_epsilon,
    clipping_epsilon_value=cfg.clipping_epsilon_value,
    entropy_cost=cfg.entropy_cost,
    normalize_advantage=cfg.normalize_advantage,
    vf_loss_coefficient=cfg.vf_loss_coefficient,
  )
  return with_fresh_advantages(cfg, networks, loss_fn) if cfg.recompute_advantages else loss_fn


def make_policy_step(cfg: PPOConfig, networks: ActorCritic) -> Callable | None:
  """TRPO's policy step on the whole batch, or None for PPO (the minibatches move the policy)."""
  if cfg.algorithm != "trpo":
    return None
  return functools.partial(
    trpo.policy_step,
    networks=networks,
    normalize_advantage=cfg.normalize_advantage,
    max_kl=cfg.trpo_max_kl,
    cg_iterations=cfg.trpo_cg_iterations,
    cg_damping=cfg.trpo_cg_damping,
    max_backtracks=cfg.trpo_max_backtracks,
    backtrack_coef=cfg.trpo_backtrack_coef,
  )


def make_train_step(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic
) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
  """The pure function of one training iteration: state -> (state, metrics)."""
  return functools.partial(
    train_step,
    cfg=cfg,
    env=env,
    networks=networks,
    loss_fn=make_loss(cfg, networks),
    policy_step=make_policy_step(cfg, networks),
  )


def make_train_chunk(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic
) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
  """Scans `iterations_per_chunk` training steps: state -> (state, metrics [K, ...]).

  With `num_resets_per_eval` R > 0, every env is reset after each `iterations_per_reset` of
  them (R times per chunk), as Brax's trainer does between evaluations.
  """
  step = make_train_step(cfg, env, networks)

  def iterations(state: TrainState) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(lambda s, _: step(s), state, None, length=cfg.iterations_per_reset)

  def iterations_then_reset(state: TrainState, _) -> tuple[TrainState, Metrics]:
    state, metrics = iterations(state)
    key, reset_key = jax.random.split(state.key)
    keys = jax.random.split(reset_key, cfg.num_envs)
    env_state = jax.vmap(env.reset)(keys, state.env_state.params)
    return state.replace(env_state=env_state, key=key), metrics

  def chunk(state: TrainState) -> tuple[TrainState, Metrics]:
    if cfg.num_resets_per_eval == 0:
      return iterations(state)
    state, metrics = jax.lax.scan(
      iterations_then_reset, state, None, length=cfg.num_resets_per_eval
    )
    return state, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), metrics)

  return chunk


def make_evaluator(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic
) -> Callable[[monitor.PolicySnapshot, jax.Array], tuple[rollout.Episodes, rollout.Trace]]:
  """Returns evaluate(policy snapshot, key) -> (its first episodes, the trace [T, N, ...]).

  One episode in each of `num_eval_envs` fresh envs, with the mode of the policy when
  `deterministic_eval`. The same program evaluates the current policy during training and
  the policies around the largest-KL update at the end.
  """

  def evaluate(snapshot: monitor.PolicySnapshot, key: jax.Array):
    policy = make_policy(networks, snapshot.policy, snapshot.normalizer, cfg.deterministic_eval)
    bound = networks.distribution.saturation_bound
    trace, _ = rollout.trace_episodes(env, policy, key, cfg.num_eval_envs, saturation_bound=bound)
    return rollout.first_episodes(trace), trace

  return evaluate
