"""The host side of training: `train(config)`, the loop around the compiled chunk.

A `Runner` owns everything a run does off the device: the run directory, resume, the records
of every iteration and evaluation, the logger, checkpoints and the end-of-run health report.
Each call of the compiled chunk runs `iterations_per_chunk` iterations on the device; the host
fetches their metrics once, logs them, evaluates, and checkpoints when one is due.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax import checkpoint, health, logger, plot
from ppo_jax.config import PPOConfig
from ppo_jax.networks import make_policy
from ppo_jax.step import (
  TrainState,
  init_state,
  make_env_and_networks,
  make_evaluator,
  make_train_chunk,
)
from ppo_jax.types import ActorCriticParams

Record = dict[str, Any]


class NonFiniteError(RuntimeError):
  """Training stopped: too many iterations in a row had NaN or Inf (see `nonfinite`)."""


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


def records_to_arrays(records: list[Record], seeds: list[int]) -> dict[str, np.ndarray]:
  """Records -> {name: array over records}; [seeds, records] for a panel."""

  def arrays(rows):
    return {name: logger.column(rows, name) for name in (rows[0] if rows else ())}

  if len(seeds) == 1:
    return arrays(records)
  per_seed = [arrays([r for r in records if r["seed"] == seed]) for seed in seeds]
  return {name: np.stack([a[name] for a in per_seed]) for name in per_seed[0]}


def _stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def open_run_dir(run_dir: Path, cfg: PPOConfig, resume: bool) -> None:
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


class Runner:
  """One run of `train`: a seed panel's state on the device and everything around it.

  A single run is a panel of one seed: seed i's state is the state of a run of `cfg` with
  seed `seeds[i]`, stacked on a leading axis, and the compiled programs are vmapped over it.
  """

  def __init__(self, cfg: PPOConfig, run_dir: Path | None, resume: bool, show_progress: bool):
    self.cfg, self.run_dir = cfg, run_dir
    if run_dir is not None:
      open_run_dir(run_dir, cfg, resume)
    self.env, self.networks = make_env_and_networks(cfg)
    self.seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
    self.state = _stack(
      [init_state(dataclasses.replace(cfg, seed=s), self.env, self.networks) for s in self.seeds]
    )
    # Apart from init_state's keys.
    self.eval_key = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in self.seeds])
    self.checkpoints = checkpoint.manager(run_dir, cfg.keep_checkpoints) if run_dir else None
    panel = len(self.seeds) > 1
    self.log = logger.RunLogger(run_dir, cfg.total_env_steps, show_progress, panel=panel)
    self.records: list[Record] = []
    self.evals: list[Record] = []
    if resume:
      self._resume()
    self.alerts = health.LabelAlerts(cfg, self.records)
    self.wall_time = self.records[-1]["wall_time"] if self.records else 0.0
    self.compile_seconds = self.train_seconds = 0.0

  @property
  def iteration(self) -> int:
    return int(self.state.iteration[0])  # all seeds move together

  def _resume(self) -> None:
    """Continues from the latest complete checkpoint, if there is one."""
    restored = checkpoint.restore_latest(self.checkpoints, self.state)
    if restored is not None:
      self.state, host = restored
      self.eval_key = jnp.asarray(host["eval_key"], dtype=jnp.uint32)
    done, steps = self.iteration, self.iteration * self.cfg.env_steps_per_iteration
    # Records written after the checkpoint belong to work that is redone now (with no
    # checkpoint at all, that includes the first evaluation).
    self.records = self.log.metrics.truncate(lambda r: r["iteration"] <= done)
    self.evals = self.log.evals.truncate(lambda r: restored is not None and r["env_steps"] <= steps)
    self.log.message(f"resuming {self.run_dir} at iteration {done} of {self.cfg.num_iterations}")

  def compile(self) -> None:
    """Compiles the training chunk (vmapped over the panel) ahead of the loop."""
    cfg = self.cfg
    self.log.message(f"compiling the training chunk ({cfg.iterations_per_chunk} iterations) ...")
    started = time.perf_counter()
    chunk = jax.jit(jax.vmap(make_train_chunk(cfg, self.env, self.networks)), donate_argnums=0)
    self.chunk = chunk.lower(self.state).compile()
    self.evaluator = jax.jit(jax.vmap(make_evaluator(cfg, self.env, self.networks)))
    self.compile_seconds = time.perf_counter() - started
    self.log.message(f"compiled the training chunk in {self.compile_seconds:.1f} s")

  def evaluate(self) -> list[Record]:
    """Evaluates every seed's policy; one record per seed."""
    keys = jax.vmap(jax.random.split)(self.eval_key)
    self.eval_key = keys[:, 0]
    metrics = jax.device_get(self.evaluator(self.state, keys[:, 1]))
    env_steps = self.iteration * self.cfg.env_steps_per_iteration
    records = [
      {"env_steps": env_steps, "wall_time": self.wall_time, "seed": seed}
      | {name: logger.jsonable(value[i]) for name, value in metrics.items()}
      for i, seed in enumerate(self.seeds)
    ]
    for record in records:
      self.evals.append(record)
      self.log.log_eval(record)
    return records

  def train_chunk(self, index: int) -> list[Record]:
    """Runs chunk `index` on the device and logs its iterations; their records, by seed."""
    started = time.perf_counter()
    self.state, metrics = self.chunk(self.state)
    metrics = jax.device_get(metrics)  # [seeds, iterations, ...]
    seconds = time.perf_counter() - started
    self.train_seconds += seconds
    self.wall_time += seconds
    cfg, count = self.cfg, self.cfg.iterations_per_chunk
    iterations = np.arange(index * count + 1, (index + 1) * count + 1)
    common = {
      "iteration": iterations,
      "env_steps": iterations * cfg.env_steps_per_iteration,
      "wall_time": np.full(count, self.wall_time),
      "sps": np.full(count, count * cfg.env_steps_per_iteration * len(self.seeds) / seconds),
    }
    per_seed = [
      logger.iteration_records({**common, **_index(metrics, i)}) for i in range(len(self.seeds))
    ]
    records = [
      {**per_seed[i][k], "seed": seed} for k in range(count) for i, seed in enumerate(self.seeds)
    ]
    self.records.extend(records)
    self.log.log_iterations(records)
    for line in self.alerts.update(records):
      self.log.message(line)
    return records

  def check_finite(self, records: list[Record]) -> None:
    """Raises NonFiniteError when a seed had `max_nonfinite_iterations` of them in a row."""
    cfg = self.cfg
    failed = [r for r in records if r["nonfinite_streak"] >= cfg.max_nonfinite_iterations]
    if not failed:
      return
    self.write_health()
    good = self.checkpoints.latest_step() if self.checkpoints is not None else None
    kept = (
      "no checkpoint was written"
      if good is None
      else f"the last good checkpoint (iteration {good}) is kept in {self.checkpoints.directory}"
    )
    where = f" (seed {failed[0]['seed']})" if len(self.seeds) > 1 else ""
    raise NonFiniteError(
      f"training stopped at iteration {failed[0]['iteration']}{where}: "
      f"{cfg.max_nonfinite_iterations} iterations in a row had NaN or Inf "
      f"({health.nonfinite_source(failed[0])}); each of their updates was skipped, and "
      f"{kept}. Set max_nonfinite_iterations to tolerate more."
    )

  def save_checkpoint(self) -> None:
    host = {"eval_key": np.asarray(self.eval_key).tolist(), "config": self.cfg.to_dict()}
    checkpoint.save(self.checkpoints, self.iteration, self.state, host)

  def learn(self, progress_fn: Callable[[Record], None] | None) -> None:
    """The loop: chunk, records, evaluation, checkpoint when due, to the last chunk."""
    cfg = self.cfg
    self.log.start(self.iteration * cfg.env_steps_per_iteration)
    if not self.evals:  # a fresh run, or a resumed one without a checkpoint
      records = self.evaluate()
      if progress_fn is not None:
        progress_fn(records[-1])
    last_checkpoint = self.iteration
    for index in range(self.iteration // cfg.iterations_per_chunk, cfg.num_chunks):
      records = self.train_chunk(index)
      self.check_finite(records)
      evals = self.evaluate()
      # After the evaluation, so that the checkpoint holds the evaluation key it advanced.
      last = index == cfg.num_chunks - 1
      due = self.iteration - last_checkpoint >= cfg.checkpoint_interval
      if self.checkpoints is not None and (due or last):
        self.save_checkpoint()
        last_checkpoint = self.iteration
      if progress_fn is not None:
        progress_fn({**records[-1], **evals[-1]})

  def write_health(self, comparisons: list[dict[str, Any] | None] | None = None) -> Record:
    report = health.panel_report(self.cfg, self.seeds, self.records, comparisons)
    if self.run_dir is not None:
      (self.run_dir / health.HEALTH_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report

  def finish(self) -> Record:
    """The end-of-run analysis: each seed's largest-KL comparison and the health report."""
    comparisons = [
      health.compare_largest_kl(
        self.cfg,
        self.env,
        self.networks,
        _index(self.state.monitor, i),
        jax.random.fold_in(jax.random.PRNGKey(seed), 2),
        health.largest_kl_dir(self.run_dir, seed, len(self.seeds)),
      )
      for i, seed in enumerate(self.seeds)
    ]
    report = self.write_health(comparisons)
    self.log.message(health.format_report(report))
    return report

  def result(self, report: Record) -> TrainResult:
    """The result; a single run's values are unstacked, a panel keeps the seed axis (its
    policy, also the one saved in the run directory, is the first seed's)."""
    first = _index(self.state, 0)
    if self.run_dir is not None:
      checkpoint.save_policy(
        self.run_dir,
        self.cfg,
        self.env.observation_size,
        self.env.action_size,
        first.params.policy,
        first.normalizer,
      )
    state = first if len(self.seeds) == 1 else self.state
    return TrainResult(
      params=state.params,
      normalizer=state.normalizer,
      metrics=records_to_arrays(self.records, self.seeds),
      evals=records_to_arrays(self.evals, self.seeds),
      policy=make_policy(self.networks, first.params.policy, first.normalizer),
      state=state,
      config=self.cfg,
      compile_seconds=self.compile_seconds,
      train_seconds=self.train_seconds,
      health=report,
      run_dir=self.run_dir,
    )


def train(
  cfg: PPOConfig,
  run_dir: str | Path | None = None,
  *,
  resume: bool = False,
  show_progress: bool = True,
  progress_fn: Callable[[Record], None] | None = None,
) -> TrainResult:
  """Trains as configured; the only place, with `logger`, that has host side effects.

  Args:
    cfg: the run's configuration (already validated by its constructor).
    run_dir: where config.json, metrics.jsonl, evals.jsonl, TensorBoard events, checkpoints,
      the final policy and plot.png go; None keeps everything in memory. Never overwritten.
    resume: continue the run in `run_dir` from its latest complete checkpoint; the result
      is the same as if the run had never stopped.
    show_progress: a progress bar and a line per evaluation on the console.
    progress_fn: called after each evaluation with a flat dict of the latest metrics.
  """
  if resume and run_dir is None:
    raise ValueError("resume=True needs the run_dir to resume")
  runner = Runner(cfg, Path(run_dir) if run_dir is not None else None, resume, show_progress)
  try:
    runner.compile()
    runner.learn(progress_fn)
    report = runner.finish()
  finally:
    runner.log.close()
  result = runner.result(report)
  if result.run_dir is not None:
    plot.plot_runs([result.run_dir], result.run_dir / plot.PLOT_FILE)
  return result
