"""The host side of training: `train(config)`, the loop around the compiled programs.

A `Runner` owns everything a run does off the device: the run directory, resume, the records
of every iteration and evaluation, the logger, checkpoints, the end-of-run health report and
the wall-time accounting by phase (`ppo_jax.phases`). Each call of the compiled chunk runs
`iterations_per_chunk` iterations on the device; the host fetches their metrics once, logs
them, evaluates, and starts a checkpoint (written in the background) when one is due.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ppo_jax import checkpoint, health, logger, phases, plot, run_info, sharding
from ppo_jax.config import PPOConfig
from ppo_jax.networks import make_policy
from ppo_jax.programs import compile_programs, policies, use_compilation_cache
from ppo_jax.result import TrainResult
from ppo_jax.rollout import eval_metrics, summarize
from ppo_jax.step import make_env_and_networks

Record = dict[str, Any]
TIMINGS_FILE = phases.TIMINGS_FILE


class NonFiniteError(RuntimeError):
  """Training stopped: too many iterations in a row had NaN or Inf (see `nonfinite`)."""


def _index(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


class Runner:
  """One run of `train`: a seed panel's state on the device and everything around it.

  A single run is a panel of one seed: seed i's state is the state of a run of `cfg` with
  seed `seeds[i]`, stacked on a leading axis, and the compiled programs are vmapped over it.
  Every step is timed as a phase of `self.phases`.
  """

  def __init__(
    self,
    cfg: PPOConfig,
    run_dir: Path | None,
    resume: bool,
    show_progress: bool,
    devices: Sequence[jax.Device] | None = None,
    wandb: dict[str, Any] | None = None,
  ):
    self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
    envs.check_name(cfg.env)  # before a run directory is made for an env this process lacks
    self.phases = phases.Phases()  # $PPO_JAX_WATCHDOG_SECONDS is checked here
    self.layout = sharding.make_layout(cfg, devices)  # before anything is made or compiled
    # Of several processes, the first writes the run directory and the console; all of them
    # write their shards of each checkpoint.
    self.primary = jax.process_index() == 0
    self.files = run_dir if self.primary else None
    self.seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
    with self.phases("setup", "the run directory"):
      if run_dir is not None and self.primary:
        logger.open_run_dir(run_dir, cfg.to_dict(), resume)
      panel, show = len(self.seeds) > 1, show_progress and self.primary
      wandb = wandb if self.primary else None  # W&B, like the console, from the first process
      sink = wandb and logger.WandbSink(wandb, cfg.to_dict(), self.files, resume)
      self.log = logger.RunLogger(self.files, cfg.total_env_steps, show, panel=panel, wandb=sink)
      self.phases.message, self.phases.status = self.log.alert, self.log.phase
      self.checkpoints = checkpoint.Checkpointer(run_dir, cfg.keep_checkpoints) if run_dir else None
    with self.phases("env", f"{cfg.env} to be built"):
      self.env, self.networks = make_env_and_networks(cfg)
    info = run_info.describe(cfg, self.env, devices or jax.devices()[:1])
    if self.files is not None:
      run_info.write(self.files, info)
    self.log.message(run_info.line(info))
    self.seed_keys = self._put(np.stack([jax.random.PRNGKey(s) for s in self.seeds]))
    # Apart from init_state's keys.
    self.eval_key = self._put(
      np.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in self.seeds])
    )
    self.records, self.evals, self.wall_offset, self.chunk_timings = [], [], 0.0, []

  def _put(self, value: np.ndarray) -> jax.Array:
    """A host value as the programs take it: replicated on every device of the layout."""
    return jnp.asarray(value) if self.layout is None else self.layout.put(value)

  @property
  def iteration(self) -> int:
    return int(sharding.fetch(self.state.iteration)[0])  # all seeds move together

  def compile(self) -> None:
    """Compiles the run's programs ahead of the loop (see `ppo_jax.programs`)."""
    layout = self.layout
    what = "XLA to compile the initial state, the training chunk and the evaluation"
    with self.phases("compile", what):
      compiled = compile_programs(
        self.cfg, self.env, self.networks, layout, self.seed_keys, self.eval_key
      )
    self.init, self.chunk, self.evaluator = compiled.init, compiled.chunk, compiled.evaluator
    self.eval_keys = compiled.eval_keys
    self.abstract_state, self.compile_seconds = compiled.state, compiled.compile_seconds
    where = "" if layout is None else f" for {layout.num_devices} devices, split by {layout.axis}"
    each = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.compile_seconds.items())
    self.log.message(f"compiled{where} in {self.phases.totals['compile']:.1f} s: {each}")

  def start(self) -> None:
    """The state to train from: the latest checkpoint of a resumed run, else a fresh one."""
    restored = None
    if self.resume:
      with self.phases("restore", "the latest checkpoint to load"):
        restored = self.checkpoints.restore_latest(self.abstract_state)
    if restored is None:
      with self.phases("init", "the networks' initialization and the envs' resets"):
        self.state = jax.block_until_ready(self.init(self.seed_keys))
    else:
      self.state, host = restored
      self.eval_key = self._put(np.asarray(host["eval_key"], dtype=np.uint32))
    self.needs_first_eval = restored is None
    if self.resume and self.primary:
      done, steps = self.iteration, self.iteration * self.cfg.env_steps_per_iteration
      # Records written after the checkpoint belong to work that is redone now (with no
      # checkpoint at all, that includes the first evaluation).
      self.records = self.log.metrics.truncate(lambda r: r["iteration"] <= done)
      self.evals = self.log.evals.truncate(
        lambda r: restored is not None and r["env_steps"] <= steps
      )
      self.log.message(f"resuming {self.run_dir} at iteration {done} of {self.cfg.num_iterations}")
    self.alerts = health.LabelAlerts(self.cfg, self.records)
    # A resumed run's clock goes on from where its records stop.
    self.wall_offset = self.records[-1]["wall_time"] if self.records else 0.0

  def wall_time(self) -> float:
    """Seconds since the run started, across resumes."""
    return self.wall_offset + self.phases.wall()

  def evaluate(self) -> list[Record]:
    """Evaluates every seed's policy (its mean action, one episode per env); a record per seed."""
    with self.phases("eval", f"{self.cfg.num_eval_envs} evaluation episodes"):
      self.eval_key, key = self.eval_keys(self.eval_key)
      episodes = sharding.fetch(self.evaluator(policies(self.state), key)[0])
    with self.phases("log", "evals.jsonl and TensorBoard"):
      env_steps = self.iteration * self.cfg.env_steps_per_iteration
      records = []
      for i, seed in enumerate(self.seeds):
        summary = summarize(_index(episodes, i))
        records.append(
          {"env_steps": env_steps, "wall_time": self.wall_time(), "seed": seed}
          | eval_metrics(summary)
        )
      for record in records:
        self.evals.append(record)
        self.log.log_eval(record)
    return records

  def train_chunk(self, index: int) -> list[Record]:
    """Runs chunk `index` on the device and logs its iterations; their records, by seed.

    Each record also holds "time/<phase>": the seconds of each phase since the previous
    chunk's records (that chunk's evaluation and checkpoint, then this chunk).
    """
    cfg, count = self.cfg, self.cfg.iterations_per_chunk
    with self.phases("train", f"chunk {index + 1} of {cfg.num_chunks} on the device"):
      started = time.perf_counter()
      self.state, metrics = self.chunk(self.state)
      metrics = sharding.fetch(metrics)  # [seeds, iterations, ...]
      seconds = time.perf_counter() - started
    with self.phases("log", "metrics.jsonl and TensorBoard"):
      iterations = np.arange(index * count + 1, (index + 1) * count + 1)
      common = {
        "iteration": iterations,
        "env_steps": iterations * cfg.env_steps_per_iteration,
        "wall_time": np.full(count, self.wall_time()),
        "sps": np.full(count, count * cfg.env_steps_per_iteration * len(self.seeds) / seconds),
      }
      common |= {f"time/{k}": np.full(count, v) for k, v in self.phases.lap().items()}
      records = logger.iteration_records(metrics, common, self.seeds)
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
    """Starts a checkpoint of the state; it is written while the next chunk trains."""
    what = "the previous checkpoint's write, then the state's copy to host memory"
    with self.phases("checkpoint", what):
      host = {"eval_key": sharding.fetch(self.eval_key).tolist(), "config": self.cfg.to_dict()}
      self.checkpoints.save(self.iteration, self.state, host)

  def learn(self, progress_fn: Callable[[Record], None] | None) -> None:
    """The loop: chunk, records, evaluation, checkpoint when due, to the last chunk."""
    cfg = self.cfg
    self.log.start(self.iteration * cfg.env_steps_per_iteration)
    if self.needs_first_eval:  # a fresh run, or a resumed one without a checkpoint
      records = self.evaluate()
      if progress_fn is not None:
        progress_fn(records[-1])
    last_checkpoint = self.iteration
    for index in range(self.iteration // cfg.iterations_per_chunk, cfg.num_chunks):
      before = dict(self.phases.totals)
      records = self.train_chunk(index)
      self.check_finite(records)
      evals = self.evaluate()
      # After the evaluation, so that the checkpoint holds the evaluation key it advanced.
      last = index == cfg.num_chunks - 1
      due = self.iteration - last_checkpoint >= cfg.checkpoint_interval
      if self.checkpoints is not None and (due or last):
        self.save_checkpoint()
        last_checkpoint = self.iteration
      seconds = self.phases.since(before)
      self.chunk_timings.append(phases.chunk_timings(index + 1, records[-1], seconds))
      self.write_timings(complete=False)  # a run killed later keeps its totals
      if progress_fn is not None:
        progress_fn({**records[-1], **evals[-1]})
    if self.checkpoints is not None:
      with self.phases("checkpoint", "the last checkpoint's write"):
        self.checkpoints.wait()

  def write_timings(self, complete: bool) -> dict[str, float]:
    """The phases' totals so far (`Phases.summary`), also written to timings.json."""
    timings = self.phases.summary()
    if self.files is not None:
      compile_seconds, chunks = self.compile_seconds, self.chunk_timings
      phases.write_timings(self.files, timings, compile_seconds, chunks, complete)
    return timings

  def write_health(self, comparisons: list[dict[str, Any] | None] | None = None) -> Record:
    report = health.panel_report(self.cfg, self.seeds, self.records, comparisons)
    if self.files is not None:
      (self.files / health.HEALTH_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report

  def finish(self) -> Record:
    """The end-of-run analysis: each seed's largest-KL comparison and the health report."""
    with self.phases("analysis", "the policies around the largest-KL update to run"):
      monitor = sharding.fetch(self.state.monitor)
      if np.any(monitor.largest_kl_iteration > 0):
        keys = self._put(
          np.stack([jax.random.fold_in(jax.random.PRNGKey(s), 2) for s in self.seeds])
        )
        before = sharding.fetch(self.evaluator(self.state.monitor.before, keys))
        after = sharding.fetch(self.evaluator(self.state.monitor.after, keys))
      comparisons = [
        health.compare_largest_kl(
          self.cfg,
          _index(monitor, i),
          _index(before, i),
          _index(after, i),
          health.largest_kl_dir(self.files, seed, len(self.seeds)),
          self.env.observation_size,
          self.env.action_size,
        )
        if monitor.largest_kl_iteration[i] > 0
        else None
        for i, seed in enumerate(self.seeds)
      ]
      report = self.write_health(comparisons)
    self.log.message(health.format_report(report))
    return report

  def result(self, report: Record) -> TrainResult:
    """The result; a single run's values are unstacked, a panel keeps the seed axis (its
    policy, also the one saved in the run directory, is the first seed's)."""
    policy, normalizer = _index(
      sharding.fetch((self.state.params.policy, self.state.normalizer)), 0
    )
    if self.files is not None:
      with self.phases("save", "the final policy and plot.png to be written"):
        checkpoint.save_policy(
          self.files,
          self.cfg,
          self.env.observation_size,
          self.env.action_size,
          policy,
          normalizer,
        )
        plot.plot_runs([self.files], self.files / plot.PLOT_FILE)
        self.log.log_plot(self.files / plot.PLOT_FILE)
    timings = self.write_timings(complete=True)
    self.log.message(phases.format_table(timings))
    state = _index(self.state, 0) if len(self.seeds) == 1 else self.state
    return TrainResult(
      params=state.params,
      normalizer=state.normalizer,
      metrics=logger.records_to_arrays(self.records, self.seeds),
      evals=logger.records_to_arrays(self.evals, self.seeds),
      policy=make_policy(self.networks, policy, normalizer),
      state=state,
      config=self.cfg,
      timings=timings,
      compile_times=self.compile_seconds,
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
  compilation_cache: bool | str | Path = True,
  devices: Sequence[jax.Device] | None = None,
  wandb: dict[str, Any] | None = None,
) -> TrainResult:
  """Trains as configured; the only place, with `logger`, that has host side effects.

  Args:
    cfg: the run's configuration (already validated by its constructor).
    run_dir: where config.json, metrics.jsonl, evals.jsonl, TensorBoard events, checkpoints,
      timings.json, the final policy and plot.png go; None keeps everything in memory.
      Never overwritten.
    resume: continue the run in `run_dir` from its latest complete checkpoint; the result
      is the same as if the run had never stopped.
    show_progress: a progress bar and a line per evaluation on the console.
    progress_fn: called after each evaluation with a flat dict of the latest metrics.
    compilation_cache: JAX's persistent compilation cache (see `use_compilation_cache`): on by
      default, in the user's cache folder; a directory; or False.
    devices: the devices to train on; all of them (of every process, after
      `jax.distributed.initialize`) by default. See `ppo_jax.sharding` for the layout.
    wandb: wandb.init's arguments (`logger.WANDB_KEYS`) to log to Weights & Biases as well.
  """
  if resume and run_dir is None:
    raise ValueError("resume=True needs the run_dir to resume")
  use_compilation_cache(compilation_cache)
  run_dir = Path(run_dir) if run_dir is not None else None
  runner = Runner(cfg, run_dir, resume, show_progress, devices, logger.check_wandb(wandb))
  result = None
  try:
    runner.compile()
    runner.start()
    runner.learn(progress_fn)
    result = runner.result(runner.finish())
    return result
  finally:
    if runner.checkpoints is not None:
      runner.checkpoints.wait()
    runner.log.close(failed=result is None)
