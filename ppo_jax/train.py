"""The training step (pure, jittable) and `train(config)`, the host loop around it.

One call of the compiled chunk runs `iterations_per_chunk` whole iterations on the device:

  rollout (scan over unrolls x unroll_length of the vmapped env step and policy sampling)
  -> values and GAE, once per rollout
  -> num_updates_per_batch epochs x num_minibatches minibatch updates (scanned), with the
     target-KL early stop and the adaptive learning rate decided on the device
  -> metrics reduced on the device.

The host fetches the stacked metrics once per chunk, then evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from ppo_jax import checkpoint, diagnostics, health, logger, monitor, normalization, trpo
from ppo_jax.config import PPOConfig
from ppo_jax.gae import compute_gae
from ppo_jax.losses import LossMetrics, make_loss
from ppo_jax.networks import ActorCritic, gaussian_log_prob, make_actor_critic, make_policy
from ppo_jax.rollout import EpisodeStats, evaluate, summarize_trace, trace_episodes, unroll
from ppo_jax.types import ActorCriticParams, Batch, TrainState, Transition

Metrics = dict[str, jax.Array]
LARGEST_KL_DIR = "largest_kl"


class NonFiniteError(RuntimeError):
  """Training stopped: too many iterations in a row had NaN or Inf (see `nonfinite`)."""


# Diagnostics reported per epoch ([num_updates_per_batch]) and as an iteration mean.
EPOCH_METRICS = LossMetrics._fields + ("grad_norm", "learning_rate")


class UpdateMetrics(NamedTuple):
  """One minibatch update: the loss metrics before it, and what the update did."""

  loss: LossMetrics
  grad_norm: jax.Array
  learning_rate: jax.Array
  applied: jax.Array


def make_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
  """Adam's direction, after optional global-norm clipping; the step size is applied apart,
  because it is a traced value that the schedules move."""
  clip = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm else []
  return optax.chain(*clip, optax.scale_by_adam())


def make_env_and_networks(cfg: PPOConfig) -> tuple[envs.Environment, ActorCritic]:
  """The configured environment and the networks sized for it."""
  env = envs.make(
    cfg.env,
    episode_length=cfg.episode_length,
    action_repeat=cfg.action_repeat,
    backend=cfg.env_backend,
  )
  return env, make_actor_critic(cfg, env.observation_size, env.action_size)


def init_state(cfg: PPOConfig, env: envs.Environment, networks: ActorCritic) -> TrainState:
  """Fresh train state for `cfg.seed`; everything on the device."""
  key = jax.random.PRNGKey(cfg.seed)
  key, params_key, env_key = jax.random.split(key, 3)
  params = networks.init(params_key)
  normalizer = normalization.init(env.observation_size)
  env_state = jax.jit(jax.vmap(env.reset))(jax.random.split(env_key, cfg.num_envs))
  state = TrainState(
    params=params,
    opt_state=make_optimizer(cfg).init(params),
    normalizer=normalizer,
    learning_rate=jnp.asarray(cfg.learning_rate, jnp.float32),
    env_state=env_state,
    key=key,
    iteration=jnp.zeros((), jnp.int32),
    monitor=monitor.init(cfg, monitor.PolicySnapshot(params.policy, normalizer)),
  )
  # One buffer per leaf (reset returns obs and final_obs as one), so the state can be donated.
  return jax.tree.map(jnp.copy, state)


def scheduled_learning_rate(cfg: PPOConfig, state: TrainState) -> jax.Array:
  """Learning rate for this iteration's first update."""
  if cfg.learning_rate_schedule == "linear":
    progress = state.iteration.astype(jnp.float32) / cfg.num_iterations
    return jnp.asarray(cfg.learning_rate, jnp.float32) * (1.0 - progress)
  # "constant" keeps cfg.learning_rate; "adaptive_kl" carries its own value.
  return state.learning_rate


def adapt_learning_rate(cfg: PPOConfig, learning_rate: jax.Array, kl: jax.Array) -> jax.Array:
  """rsl_rl's rule: / 1.5 above 2 * desired_kl, * 1.5 below desired_kl / 2, clamped."""
  learning_rate = jnp.where(kl > 2.0 * cfg.desired_kl, learning_rate / 1.5, learning_rate)
  learning_rate = jnp.where(kl < 0.5 * cfg.desired_kl, learning_rate * 1.5, learning_rate)
  return jnp.clip(learning_rate, cfg.min_learning_rate, cfg.max_learning_rate)


def make_train_step(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic
) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
  """Returns the pure function of one training iteration: state -> (state, metrics)."""
  loss_fn = make_loss(cfg, networks)
  optimizer = make_optimizer(cfg)

  def collect(state: TrainState, key: jax.Array):
    """Unrolls all envs `unrolls_per_iteration` times: transitions [T, U * B, ...]."""

    def one_unroll(env_state, unroll_key):
      env_state, transitions, stats = unroll(
        env,
        networks,
        state.params.policy,
        state.normalizer,
        env_state,
        unroll_key,
        cfg.unroll_length,
      )
      return env_state, (transitions, stats)

    env_state, (transitions, stats) = jax.lax.scan(
      one_unroll, state.env_state, jax.random.split(key, cfg.unrolls_per_iteration)
    )
    # [U, T, B, ...] -> [T, U * B, ...]: every segment is a column of the GAE.
    transitions = jax.tree.map(
      lambda x: jnp.swapaxes(x, 0, 1).reshape(x.shape[1], -1, *x.shape[3:]), transitions
    )
    return env_state, transitions, EpisodeStats.reduce(stats)

  def make_batch(value_params, normalizer, transitions: Transition) -> Batch:
    """Values and GAE for the rollout, flattened to samples [T * N, ...]."""
    values = networks.value(value_params, normalizer, transitions.obs)
    next_values = networks.value(value_params, normalizer, transitions.next_obs)
    advantages, targets = compute_gae(
      transitions.reward * cfg.reward_scaling,
      values,
      next_values,
      transitions.termination,
      transitions.truncation,
      cfg.discounting,
      cfg.gae_lambda,
    )
    batch = Batch(
      obs=transitions.obs,
      action=transitions.action,
      log_prob=transitions.log_prob,
      mean=transitions.mean,
      std=transitions.std,
      value=values,
      advantage=advantages,
      target=targets,
    )
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)

  def unless_stopped(stopped, run, skip, *args):
    """run(*args) while updates go on, skip(*args) after the target-KL stop."""
    if cfg.target_kl is None:  # nothing can stop the updates: no branch at all
      return run(*args)
    return jax.lax.cond(stopped, skip, run, *args)

  def minibatch_update(carry, minibatch: Batch, normalizer):
    params, opt_state, learning_rate, stopped = carry

    def measure(params):
      _, metrics = loss_fn(params, normalizer, minibatch)
      return metrics, jax.tree.map(jnp.zeros_like, params)

    def measure_and_differentiate(params):
      (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, normalizer, minibatch)
      return metrics, grads

    # Once stopped, a minibatch is only measured: no gradient is computed.
    metrics, grads = unless_stopped(stopped, measure_and_differentiate, measure, params)
    if cfg.target_kl is not None:
      stopped = stopped | (metrics.approx_kl > cfg.target_kl_factor * cfg.target_kl)
    if cfg.learning_rate_schedule == "adaptive_kl":
      learning_rate = jnp.where(
        stopped, learning_rate, adapt_learning_rate(cfg, learning_rate, metrics.exact_kl)
      )

    def apply(params, opt_state):
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
      return params, opt_state

    params, opt_state = unless_stopped(stopped, apply, lambda p, o: (p, o), params, opt_state)
    update_metrics = UpdateMetrics(
      loss=metrics,
      grad_norm=optax.global_norm(grads),
      learning_rate=learning_rate,
      applied=~stopped,
    )
    return (params, opt_state, learning_rate, stopped), update_metrics

  def epoch(carry, key, batch: Batch, normalizer):
    order = jax.random.permutation(key, cfg.num_segments * cfg.unroll_length)
    minibatches = jax.tree.map(
      lambda x: x[order].reshape(cfg.num_minibatches, cfg.minibatch_size, *x.shape[1:]), batch
    )
    carry, updates = jax.lax.scan(
      lambda c, mb: minibatch_update(c, mb, normalizer), carry, minibatches
    )
    return carry, updates

  def reduce_epochs(updates: UpdateMetrics) -> Metrics:
    """[E, M] minibatch metrics -> per-epoch [E] and iteration-mean scalars."""
    applied = updates.applied.astype(jnp.float32)
    per_epoch = {name: jnp.mean(value, axis=1) for name, value in updates.loss._asdict().items()}
    per_epoch["action_std_min"] = jnp.min(updates.loss.action_std_min, axis=1)
    # Gradient norms and rates of the updates that were applied (0 where none was).
    per_epoch["grad_norm"] = jnp.sum(updates.grad_norm * applied, axis=1) / jnp.maximum(
      jnp.sum(applied, axis=1), 1.0
    )
    per_epoch["learning_rate"] = updates.learning_rate[:, -1]
    metrics = {f"{name}_per_epoch": value for name, value in per_epoch.items()}
    metrics.update({name: jnp.mean(value) for name, value in per_epoch.items()})
    metrics["action_std_min"] = jnp.min(per_epoch["action_std_min"])
    metrics["learning_rate"] = per_epoch["learning_rate"][-1]
    metrics["minibatch_updates_applied"] = jnp.sum(applied)
    metrics["epochs_applied"] = jnp.sum(jnp.any(updates.applied, axis=1))
    return metrics

  def rollout_metrics(stats: EpisodeStats, transitions: Transition) -> Metrics:
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
      "action_saturation": diagnostics.action_saturation(transitions.action),
      "action_abs_mean": jnp.mean(jnp.abs(transitions.action)),
      **{f"env/{name}": per_episode(total) for name, total in stats.metrics.items()},
    }

  def measure_update(policy_params, normalizer, batch: Batch) -> Metrics:
    """The update as a whole: the rollout policy against the updated one, over the batch."""
    mean, std = networks.policy(policy_params, normalizer, batch.obs)
    log_ratio = gaussian_log_prob(batch.action, mean, std) - batch.log_prob
    return {
      "update_kl": diagnostics.approx_kl(log_ratio),
      "update_exact_kl": jnp.mean(diagnostics.gaussian_kl(batch.mean, batch.std, mean, std)),
      "update_clip_fraction": diagnostics.clip_fraction(jnp.exp(log_ratio), cfg.clipping_epsilon),
      "update_action_std": jnp.mean(std),
    }

  def trpo_policy_step(params: ActorCriticParams, normalizer, batch: Batch):
    """One TRPO step of the policy on the whole batch: (params, "trpo/..." metrics)."""
    advantages = batch.advantage
    if cfg.normalize_advantage:
      advantages = (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + 1e-8)
    # The step's KL is measured from the current params under this iteration's statistics,
    # so it is 0 at the start and its Hessian there is the Fisher matrix.
    old_mean, old_std = jax.lax.stop_gradient(networks.policy(params.policy, normalizer, batch.obs))

    def surrogate(policy_params):
      mean, std = networks.policy(policy_params, normalizer, batch.obs)
      ratio = jnp.exp(gaussian_log_prob(batch.action, mean, std) - batch.log_prob)
      return jnp.mean(ratio * advantages)

    def kl(policy_params):
      mean, std = networks.policy(policy_params, normalizer, batch.obs)
      return jnp.mean(diagnostics.gaussian_kl(old_mean, old_std, mean, std))

    step = trpo.trpo_step(
      surrogate,
      kl,
      params.policy,
      max_kl=cfg.trpo_max_kl,
      cg_iterations=cfg.trpo_cg_iterations,
      cg_damping=cfg.trpo_cg_damping,
      max_backtracks=cfg.trpo_max_backtracks,
      backtrack_coef=cfg.trpo_backtrack_coef,
    )
    metrics = {
      f"trpo/{name}": getattr(step, name)
      for name in (
        "accepted",
        "backtracks",
        "step_fraction",
        "step_size",
        "kl",
        "improvement",
        "expected_improvement",
        "cg_residual",
        "grad_norm",
      )
    }
    return params.replace(policy=step.params), metrics

  def train_step(state: TrainState) -> tuple[TrainState, Metrics]:
    key, rollout_key, sgd_key = jax.random.split(state.key, 3)
    env_state, transitions, stats = collect(state, rollout_key)
    # As in Brax, the statistics take in the rollout before the update; the first
    # minibatch's ratio then also measures that shift of the policy's input.
    normalizer = state.normalizer
    if cfg.normalize_observations:
      normalizer = normalization.update(normalizer, transitions.obs)
    batch = make_batch(state.params.value, normalizer, transitions)

    params, step_metrics = state.params, {}
    if cfg.algorithm == "trpo":  # the policy steps first; the epochs below fit the value
      params, step_metrics = trpo_policy_step(params, normalizer, batch)
    carry = (params, state.opt_state, scheduled_learning_rate(cfg, state), jnp.array(False))
    # Epoch keys are folded in, so epoch e shuffles alike whatever num_updates_per_batch is.
    epoch_keys = jax.vmap(jax.random.fold_in, (None, 0))(
      sgd_key, jnp.arange(cfg.num_updates_per_batch)
    )
    (params, opt_state, learning_rate, _), updates = jax.lax.scan(
      lambda c, k: epoch(c, k, batch, normalizer), carry, epoch_keys
    )
    update = measure_update(params.policy, normalizer, batch)

    # A NaN or Inf anywhere skips the whole update: the learner's state stays as it was.
    finite = diagnostics.all_finite(
      (transitions, updates.loss.total_loss, updates.grad_norm, params, opt_state, normalizer)
    )
    learner = (params, opt_state, normalizer, learning_rate)
    before = (state.params, state.opt_state, state.normalizer, state.learning_rate)
    params, opt_state, normalizer, learning_rate = jax.tree.map(
      lambda new, old: jnp.where(finite, new, old), learner, before
    )

    iteration = state.iteration + 1
    rollout = rollout_metrics(stats, transitions)
    signals = monitor.Signals(
      update_kl=update["update_kl"],
      clip_fraction=update["update_clip_fraction"],
      action_std=update["update_action_std"],
      episode_return=rollout["episode_return"],
      finite=finite,
    )
    threshold = monitor.kl_spike_threshold(cfg, state.monitor)
    monitor_state, labels = monitor.observe(cfg, state.monitor, signals)
    monitor_state = monitor.record_largest(
      monitor_state,
      update["update_kl"],
      finite,
      iteration,
      before=monitor.PolicySnapshot(state.params.policy, state.normalizer),
      after=monitor.PolicySnapshot(params.policy, normalizer),
    )
    state = state.replace(
      params=params,
      opt_state=opt_state,
      normalizer=normalizer,
      learning_rate=learning_rate,
      env_state=env_state,
      key=key,
      iteration=iteration,
      monitor=monitor_state,
    )
    metrics = {
      **reduce_epochs(updates),
      **step_metrics,
      **update,
      **rollout,
      **{f"label/{name}": value for name, value in labels.items()},
      "kl_spike_threshold": threshold,
      "nonfinite_rollout": ~diagnostics.all_finite(transitions),
      "nonfinite_streak": monitor_state.nonfinite_streak,
    }
    return state, metrics

  return train_step


def make_train_chunk(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic
) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
  """Scans `iterations_per_chunk` training steps: state -> (state, metrics [K, ...])."""
  train_step = make_train_step(cfg, env, networks)

  def chunk(state: TrainState) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(lambda s, _: train_step(s), state, None, length=cfg.iterations_per_chunk)

  return chunk


def make_evaluator(
  cfg: PPOConfig, env: envs.Environment, networks: ActorCritic
) -> Callable[[TrainState, jax.Array], dict[str, jax.Array]]:
  """Returns evaluate(state, key) -> eval metrics of the current policy (one episode per env)."""

  def run(state: TrainState, key: jax.Array) -> dict[str, jax.Array]:
    metrics = evaluate(
      env,
      networks,
      state.params.policy,
      state.normalizer,
      key,
      cfg.num_eval_envs,
      cfg.deterministic_eval,
    )
    return {f"eval/{name}": value for name, value in metrics._asdict().items()}

  return run


def compare_largest_kl(
  cfg: PPOConfig,
  env: envs.Environment,
  networks: ActorCritic,
  monitor_state: monitor.MonitorState,
  key: jax.Array,
  out_dir: Path | None,
) -> dict[str, Any] | None:
  """Runs the policies before and after the largest-KL update on the same seeds.

  Each runs one episode in `num_eval_envs` fresh envs, with the same initial states and the
  same noise. With `out_dir`, writes before_trace.npz, after_trace.npz (see `Trace`),
  comparison.json and the two policies there (`load_policy(out_dir / "before")` loads one).

  Returns:
    {"iteration", "update_kl", "episodes", "deterministic", "before": {...}, "after": {...}}
    with per-episode returns, lengths and terminations of each, or None before any update.
  """
  iteration = int(monitor_state.largest_kl_iteration)
  if iteration == 0:
    return None

  @jax.jit
  def rollout(snapshot: monitor.PolicySnapshot):
    policy = make_policy(networks, snapshot.policy, snapshot.normalizer, cfg.deterministic_eval)
    return trace_episodes(env, policy, key, cfg.num_eval_envs)[0]

  comparison = {
    "iteration": iteration,
    "update_kl": float(monitor_state.largest_kl),
    "episodes": cfg.num_eval_envs,
    "deterministic": cfg.deterministic_eval,
  }
  for name, snapshot in (("before", monitor_state.before), ("after", monitor_state.after)):
    trace = {k: np.asarray(v) for k, v in jax.device_get(rollout(snapshot))._asdict().items()}
    comparison[name] = summarize_trace(trace)
    if out_dir is not None:
      out_dir.mkdir(parents=True, exist_ok=True)
      np.savez(out_dir / f"{name}_trace.npz", **trace)
      checkpoint.save_policy(
        out_dir / name,
        cfg,
        env.observation_size,
        env.action_size,
        snapshot.policy,
        snapshot.normalizer,
      )
  if out_dir is not None:
    (out_dir / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
  return comparison


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  Attributes:
    params: final network parameters.
    normalizer: final observation statistics.
    metrics: per-iteration numpy arrays; "<name>_per_epoch" ones are [iterations, epochs].
    evals: per-evaluation numpy arrays ("env_steps", "eval/episode_return", ...).
    policy: jittable deterministic policy(obs, key=None) -> action.
    state: the final TrainState (on the device).
    config: the config trained.
    compile_seconds: time to compile the training chunk.
    train_seconds: wall time of the training chunks (evaluations excluded).
    health: the health report (label counts, largest-KL update and its comparison, trends).
    run_dir: the run directory, if any.
  """

  params: ActorCriticParams
  normalizer: Any
  metrics: dict[str, np.ndarray]
  evals: dict[str, np.ndarray]
  policy: Callable[..., jax.Array]
  state: TrainState
  config: PPOConfig
  compile_seconds: float
  train_seconds: float
  health: dict[str, Any]
  run_dir: Path | None = None


def _records_to_arrays(records: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
  """JSON records (None for NaN) -> {name: array over records}; [seeds, records] for a panel."""

  def arrays(rows):
    if not rows:
      return {}
    return {
      name: np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=float)
      for name in rows[0]
    }

  if len(seeds) == 1:
    return arrays(records)
  per_seed = [arrays([r for r in records if r["seed"] == seed]) for seed in seeds]
  return {name: np.stack([a[name] for a in per_seed]) for name in per_seed[0]}


def _stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def _open_run_dir(run_dir: Path, cfg: PPOConfig, resume: bool) -> None:
  """Checks the run directory and writes its config.json, all before anything is compiled.

  A new run needs an absent or empty directory it can create; a resumed one needs the same
  config and write access. Each failure names the path.
  """
  config_path = run_dir / logger.CONFIG_FILE
  if resume:
    if not config_path.exists():
      raise FileNotFoundError(f"cannot resume {run_dir}: it has no {logger.CONFIG_FILE}")
    saved = PPOConfig(**json.loads(config_path.read_text()))
    if saved != cfg:
      raise ValueError(f"cannot resume {run_dir}: its config.json differs from the config given")
    if not os.access(run_dir, os.W_OK | os.X_OK):
      raise PermissionError(f"cannot resume {run_dir}: the run directory is not writable")
    return
  try:
    if run_dir.exists() and any(run_dir.iterdir()):
      raise FileExistsError(f"run directory {run_dir} is not empty; a run is never overwritten")
    run_dir.mkdir(parents=True, exist_ok=True)
  except PermissionError as error:
    blocked = Path(error.filename).parent if error.filename else run_dir.parent
    raise PermissionError(
      f"cannot create the run directory {run_dir}: no permission to write in {blocked}"
    ) from error
  if not os.access(run_dir, os.W_OK | os.X_OK):
    raise PermissionError(f"run directory {run_dir} is not writable")
  # Written whole, then renamed: a kill midway never leaves a config.json that resume misreads.
  partial = config_path.with_name(config_path.name + ".partial")
  partial.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
  os.replace(partial, config_path)


def train(
  cfg: PPOConfig,
  run_dir: str | Path | None = None,
  *,
  resume: bool = False,
  show_progress: bool = True,
  progress_fn: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
  """Trains PPO as configured; with `logger`, the only place with host side effects.

  Args:
    cfg: the run's configuration (already validated by its constructor).
    run_dir: where config.json, metrics.jsonl, evals.jsonl, TensorBoard events, checkpoints
      and the final policy go; None keeps everything in memory. Never overwritten.
    resume: continue the run in `run_dir` from its latest complete checkpoint; the result
      is the same as if the run had never stopped.
    show_progress: a progress bar and a line per evaluation on the console.
    progress_fn: called after each evaluation with a flat dict of the latest metrics.
  """
  if resume and run_dir is None:
    raise ValueError("resume=True needs the run_dir to resume")
  run_dir = Path(run_dir) if run_dir is not None else None
  if run_dir is not None:
    _open_run_dir(run_dir, cfg, resume)
  env, networks = make_env_and_networks(cfg)
  # The panel's state: seed i's is the state of a run of `cfg` with seed `seeds[i]`, stacked.
  seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
  state = _stack([init_state(dataclasses.replace(cfg, seed=s), env, networks) for s in seeds])
  # Apart from init_state's keys.
  eval_key = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
  checkpoints = checkpoint.manager(run_dir, cfg.keep_checkpoints) if run_dir else None
  log = logger.RunLogger(run_dir, cfg.total_env_steps, show_progress, panel=len(seeds) > 1)
  iteration = lambda: int(state.iteration[0])  # noqa: E731  (all seeds move together)

  records: list[dict[str, Any]] = []
  evals: list[dict[str, Any]] = []
  if resume:
    restored = checkpoint.restore_latest(checkpoints, state)
    if restored is not None:
      state, host = restored
      eval_key = jnp.asarray(host["eval_key"], dtype=jnp.uint32)
    done = iteration()
    # Records written after the checkpoint belong to work that is redone now (with no
    # checkpoint at all, that includes the first evaluation).
    records = log.metrics.truncate(lambda r: r["iteration"] <= done)
    evals = log.evals.truncate(
      lambda r: restored is not None and r["env_steps"] <= done * cfg.env_steps_per_iteration
    )
    log.message(f"resuming {run_dir} at iteration {done} of {cfg.num_iterations}")
  alerts = health.LabelAlerts(cfg, records)

  log.message(f"compiling the training chunk ({cfg.iterations_per_chunk} iterations) ...")
  started = time.perf_counter()
  chunk = jax.jit(jax.vmap(make_train_chunk(cfg, env, networks)), donate_argnums=0)
  chunk = chunk.lower(state).compile()
  evaluator = jax.jit(jax.vmap(make_evaluator(cfg, env, networks)))
  compile_seconds = time.perf_counter() - started
  log.message(f"compiled the training chunk in {compile_seconds:.1f} s")
  wall_time = records[-1]["wall_time"] if records else 0.0
  train_seconds = 0.0

  def run_eval() -> list[dict[str, Any]]:
    nonlocal eval_key
    keys = jax.vmap(jax.random.split)(eval_key)
    eval_key = keys[:, 0]
    metrics = jax.device_get(evaluator(state, keys[:, 1]))
    env_steps = iteration() * cfg.env_steps_per_iteration
    seed_records = [
      {"env_steps": env_steps, "wall_time": wall_time, "seed": seed}
      | {name: logger.jsonable(value[i]) for name, value in metrics.items()}
      for i, seed in enumerate(seeds)
    ]
    for record in seed_records:
      evals.append(record)
      log.log_eval(record)
    return seed_records

  def write_health(comparisons: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
    report = health.panel_report(cfg, seeds, records, comparisons)
    if run_dir is not None:
      (run_dir / health.HEALTH_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report

  def save_checkpoint() -> None:
    host = {"eval_key": np.asarray(eval_key).tolist(), "config": cfg.to_dict()}
    checkpoint.save(checkpoints, iteration(), state, host)

  first_chunk = iteration() // cfg.iterations_per_chunk
  log.start(iteration() * cfg.env_steps_per_iteration)
  if not evals:
    seed_records = run_eval()
    if progress_fn is not None:
      progress_fn(seed_records[-1])
  last_checkpoint = iteration()
  try:
    for index in range(first_chunk, cfg.num_chunks):
      started = time.perf_counter()
      state, metrics = chunk(state)
      metrics = jax.device_get(metrics)  # [seeds, iterations, ...]
      seconds = time.perf_counter() - started
      train_seconds += seconds
      wall_time += seconds
      first = index * cfg.iterations_per_chunk + 1
      iterations = np.arange(first, first + cfg.iterations_per_chunk)
      common = {
        "iteration": iterations,
        "env_steps": iterations * cfg.env_steps_per_iteration,
        "wall_time": np.full(len(iterations), wall_time),
        "sps": np.full(
          len(iterations), len(iterations) * cfg.env_steps_per_iteration * len(seeds) / seconds
        ),
      }
      per_seed = [
        logger.iteration_records({**common, **_index(metrics, i)}) for i in range(len(seeds))
      ]
      chunk_records = [
        {**per_seed[i][k], "seed": seed}
        for k in range(len(iterations))
        for i, seed in enumerate(seeds)
      ]
      records.extend(chunk_records)
      log.log_iterations(chunk_records)
      for line in alerts.update(chunk_records):
        log.message(line)
      failed = [r for r in chunk_records if r["nonfinite_streak"] >= cfg.max_nonfinite_iterations]
      if failed:
        write_health()
        good = checkpoints.latest_step() if checkpoints is not None else None
        kept = (
          "no checkpoint was written"
          if good is None
          else f"the last good checkpoint (iteration {good}) is kept in {checkpoints.directory}"
        )
        where = f" (seed {failed[0]['seed']})" if len(seeds) > 1 else ""
        raise NonFiniteError(
          f"training stopped at iteration {failed[0]['iteration']}{where}: "
          f"{cfg.max_nonfinite_iterations} iterations in a row had NaN or Inf "
          f"({health.nonfinite_source(failed[0])}); each of their updates was skipped, and "
          f"{kept}. Set max_nonfinite_iterations to tolerate more."
        )
      seed_records = run_eval()
      # After the evaluation, so that the checkpoint holds the evaluation key it advanced.
      last = index == cfg.num_chunks - 1
      due = iteration() - last_checkpoint >= cfg.checkpoint_interval
      if checkpoints is not None and (due or last):
        save_checkpoint()
        last_checkpoint = iteration()
      if progress_fn is not None:
        progress_fn({**chunk_records[-1], **seed_records[-1]})
    comparisons = [
      compare_largest_kl(
        cfg,
        env,
        networks,
        _index(state.monitor, i),
        jax.random.fold_in(jax.random.PRNGKey(seed), 2),
        _largest_kl_dir(run_dir, seed, len(seeds)),
      )
      for i, seed in enumerate(seeds)
    ]
    report = write_health(comparisons)
    log.message(health.format_report(report))
  finally:
    log.close()

  # A single run returns unstacked values; a panel keeps the seed axis (its policy is seed 0's).
  first_state = _index(state, 0)
  if run_dir is not None:
    checkpoint.save_policy(
      run_dir,
      cfg,
      env.observation_size,
      env.action_size,
      first_state.params.policy,
      first_state.normalizer,
    )
  result_state = first_state if len(seeds) == 1 else state
  return TrainResult(
    params=result_state.params,
    normalizer=result_state.normalizer,
    metrics=_records_to_arrays(records, seeds),
    evals=_records_to_arrays(evals, seeds),
    policy=make_policy(networks, first_state.params.policy, first_state.normalizer),
    state=result_state,
    config=cfg,
    compile_seconds=compile_seconds,
    train_seconds=train_seconds,
    health=report,
    run_dir=run_dir,
  )


def _largest_kl_dir(run_dir: Path | None, seed: int, num_seeds: int) -> Path | None:
  if run_dir is None:
    return None
  return run_dir / LARGEST_KL_DIR if num_seeds == 1 else run_dir / LARGEST_KL_DIR / f"seed_{seed}"


def load_policy(run_dir: str | Path, deterministic: bool = False) -> Callable[..., jax.Array]:
  """The final policy of a run, from its directory alone (normalizer included).

  Returns:
    A jittable policy(obs [..., obs_size], key=None) -> action in [-1, 1]; the mean action
    without a key (or with deterministic=True), a sample with one.
  """
  cfg, observation_size, action_size, params, normalizer = checkpoint.load_policy_payload(run_dir)
  networks = make_actor_critic(cfg, observation_size, action_size)
  return make_policy(networks, params, normalizer, deterministic)
