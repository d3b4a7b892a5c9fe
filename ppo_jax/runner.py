"""The host side of training: `train(config)`, the loop around the compiled programs.

A `Runner` owns everything a run does off the device: the run directory, resume, the records
of every iteration and evaluation, the logger, checkpoints, the end-of-run health report and
the wall-time accounting by phase (`ppo_jax.phases`). Each call of the compiled chunk runs
`iterations_per_chunk` iterations on the device; the host fetches their metrics once, logs
them, evaluates, and starts a checkpoint (written in the background) when one is due.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

from ppo_jax import checkpoint, health, logger, phases
from ppo_jax.config import PPOConfig
from ppo_jax.monitor import PolicySnapshot
from ppo_jax.networks import make_policy
from ppo_jax.rollout import summarize
from ppo_jax.step import (
  TrainState,
  init_state,
  make_env_and_networks,
  make_evaluator,
  make_train_chunk,
)
from ppo_jax.types import ActorCriticParams

Record = dict[str, Any]
TIMINGS_FILE = "timings.json"


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
    timings: seconds per phase of this process's run ("setup", "env", "compile", "init",
      "train", "eval", "checkpoint", "log", "analysis", "save"), "unaccounted" and "wall".
    compile_times: seconds each program took to compile ("init", "chunk", "evaluator"); they
      compile side by side, within the "compile" phase.
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
  timings: dict[str, float]
  compile_times: dict[str, float]
  health: dict[str, Any]
  run_dir: Path | None = None

  @property
  def compile_seconds(self) -> float:
    """Wall seconds spent compiling the run's programs."""
    return self.timings.get("compile", 0.0)

  @property
  def train_seconds(self) -> float:
    """Seconds spent in the training chunks (evaluations and the rest excluded)."""
    return self.timings.get("train", 0.0)


def default_cache_dir() -> Path:
  """Where compiled programs are kept between runs: $PPO_JAX_CACHE_DIR, else the user's cache
  folder ($XDG_CACHE_HOME or ~/.cache)/ppo_jax/jax_compilation_cache."""
  if os.environ.get("PPO_JAX_CACHE_DIR"):
    return Path(os.environ["PPO_JAX_CACHE_DIR"])
  base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
  return base / "ppo_jax" / "jax_compilation_cache"


def use_compilation_cache(cache: bool | str | Path) -> str | None:
  """Turns on JAX's persistent compilation cache for this process, so that a second run of the
  same programs loads them instead of compiling them.

  Args:
    cache: True for `default_cache_dir()`, a directory, or False to leave JAX as it is. A cache
      directory the process already set (JAX_COMPILATION_CACHE_DIR, jax.config) wins.
  Returns:
    The directory in use, or None.
  """
  current = jax.config.jax_compilation_cache_dir
  if current or cache is False:
    return current
  directory = default_cache_dir() if cache is True else Path(cache)
  directory.mkdir(parents=True, exist_ok=True)
  compilation_cache.set_cache_dir(str(directory))
  compilation_cache.reset_cache()  # takes effect even after earlier compilations
  return str(directory)


def records_to_arrays(records: list[Record], seeds: list[int]) -> dict[str, np.ndarray]:
  """Records -> {name: array over records}; [seeds, records] for a panel."""

  def arrays(rows):
    return {name: logger.column(rows, name) for name in (rows[0] if rows else ())}

  if len(seeds) == 1:
    return arrays(records)
  per_seed = [arrays([r for r in records if r["seed"] == seed]) for seed in seeds]
  return {name: np.stack([a[name] for a in per_seed]) for name in per_seed[0]}


def _policies(state: TrainState) -> PolicySnapshot:
  """A panel's current policies, as the evaluator takes them."""
  return PolicySnapshot(state.params.policy, state.normalizer)


def _timed_compile(lowered: jax.stages.Lowered) -> tuple[jax.stages.Compiled, float]:
  started = time.perf_counter()
  return lowered.compile(), time.perf_counter() - started


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
  Every step is timed as a phase of `self.phases`.
  """

  def __init__(self, cfg: PPOConfig, run_dir: Path | None, resume: bool, show_progress: bool):
    self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
    self.phases = phases.Phases()
    self.seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
    with self.phases("setup", "the run directory"):
      if run_dir is not None:
        open_run_dir(run_dir, cfg, resume)
      panel = len(self.seeds) > 1
      self.log = logger.RunLogger(run_dir, cfg.total_env_steps, show_progress, panel=panel)
      self.phases.message, self.phases.status = self.log.message, self.log.phase
      self.checkpoints = checkpoint.Checkpointer(run_dir, cfg.keep_checkpoints) if run_dir else None
    with self.phases("env", f"{cfg.env} to be built"):
      self.env, self.networks = make_env_and_networks(cfg)
    self.seed_keys = jnp.stack([jax.random.PRNGKey(s) for s in self.seeds])
    # Apart from init_state's keys.
    self.eval_key = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in self.seeds])
    self.records: list[Record] = []
    self.evals: list[Record] = []
    self.wall_offset = 0.0

  @property
  def iteration(self) -> int:
    return int(self.state.iteration[0])  # all seeds move together

  def compile(self) -> None:
    """Compiles the initial state, the training chunk and the evaluator (each vmapped over the
    panel) ahead of the loop, side by side: XLA compiles each on a thread of its own."""
    cfg, env, networks = self.cfg, self.env, self.networks
    what = "XLA to compile the initial state, the training chunk and the evaluator"
    with self.phases("compile", what):
      init = jax.jit(jax.vmap(functools.partial(init_state, cfg, env, networks)))
      state = jax.eval_shape(init, self.seed_keys)
      chunk = jax.jit(jax.vmap(make_train_chunk(cfg, env, networks)), donate_argnums=0)
      evaluator = jax.jit(jax.vmap(make_evaluator(cfg, env, networks)))
      lowered = {
        "init": init.lower(self.seed_keys),
        "chunk": chunk.lower(state),
        "evaluator": evaluator.lower(_policies(state), self.eval_key),
      }
      with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
        compiled = {name: pool.submit(_timed_compile, low) for name, low in lowered.items()}
        compiled = {name: future.result() for name, future in compiled.items()}
    self.abstract_state = state
    self.init, self.chunk, self.evaluator = (compiled[n][0] for n in ("init", "chunk", "evaluator"))
    self.compile_seconds = {name: seconds for name, (_, seconds) in compiled.items()}
    self.log.message(
      f"compiled in {self.phases.totals['compile']:.1f} s: "
      + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.compile_seconds.items())
    )

  def start(self) -> None:
    """The state to train from: the latest checkpoint of a resumed run, else a fresh one."""
    restored = None
    if self.resume:
      with self.phases("restore", "the latest checkpoint to load"):
        restored = self.checkpoints.restore_latest(self.abstract_state)
    if restored is None:
      with self.phases("init", "the networks' initialization and the envs' resets"):
        self.state = self.init(self.seed_keys)
    else:
      self.state, host = restored
      self.eval_key = jnp.asarray(host["eval_key"], dtype=jnp.uint32)
    if self.resume:
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
      keys = jax.vmap(jax.random.split)(self.eval_key)
      self.eval_key = keys[:, 0]
      episodes = jax.device_get(self.evaluator(_policies(self.state), keys[:, 1])[0])
    with self.phases("log", "evals.jsonl and TensorBoard"):
      env_steps = self.iteration * self.cfg.env_steps_per_iteration
      records = []
      for i, seed in enumerate(self.seeds):
        summary = summarize(_index(episodes, i))
        records.append(
          {"env_steps": env_steps, "wall_time": self.wall_time(), "seed": seed}
          | {f"eval/{name}": summary[key] for name, key in EVAL_FIELDS.items()}
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
      metrics = jax.device_get(metrics)  # [seeds, iterations, ...]
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
    """Starts a checkpoint of the state; it is written while the next chunk trains."""
    what = "the previous checkpoint's write, then the state's copy to host memory"
    with self.phases("checkpoint", what):
      host = {"eval_key": np.asarray(self.eval_key).tolist(), "config": self.cfg.to_dict()}
      self.checkpoints.save(self.iteration, self.state, host)

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
    if self.checkpoints is not None:
      with self.phases("checkpoint", "the last checkpoint's write"):
        self.checkpoints.wait()

  def write_health(self, comparisons: list[dict[str, Any] | None] | None = None) -> Record:
    report = health.panel_report(self.cfg, self.seeds, self.records, comparisons)
    if self.run_dir is not None:
      (self.run_dir / health.HEALTH_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report

  def finish(self) -> Record:
    """The end-of-run analysis: each seed's largest-KL comparison and the health report."""
    monitor = self.state.monitor
    with self.phases("analysis", "the policies around the largest-KL update to run"):
      if np.any(np.asarray(monitor.largest_kl_iteration) > 0):
        keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 2) for s in self.seeds])
        before = jax.device_get(self.evaluator(monitor.before, keys))
        after = jax.device_get(self.evaluator(monitor.after, keys))
      comparisons = [
        health.compare_largest_kl(
          self.cfg,
          _index(monitor, i),
          _index(before, i),
          _index(after, i),
          health.largest_kl_dir(self.run_dir, seed, len(self.seeds)),
          self.env.observation_size,
          self.env.action_size,
        )
        if int(monitor.largest_kl_iteration[i]) > 0
        else None
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
      with self.phases("save", "the final policy to be written"):
        checkpoint.save_policy(
          self.run_dir,
          self.cfg,
          self.env.observation_size,
          self.env.action_size,
          first.params.policy,
          first.normalizer,
        )
    timings = self.phases.summary()
    if self.run_dir is not None:
      record = {"phases": timings, "compile": self.compile_seconds}
      (self.run_dir / TIMINGS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    self.log.message(phases.format_table(timings))
    state = first if len(self.seeds) == 1 else self.state
    return TrainResult(
      params=state.params,
      normalizer=state.normalizer,
      metrics=records_to_arrays(self.records, self.seeds),
      evals=records_to_arrays(self.evals, self.seeds),
      policy=make_policy(self.networks, first.params.policy, first.normalizer),
      state=state,
      config=self.cfg,
      timings=timings,
      compile_times=self.compile_seconds,
      health=report,
      run_dir=self.run_dir,
    )


# Evaluation record field -> the `rollout.summarize` entry it holds.
EVAL_FIELDS = {
  "episode_return": "mean_return",
  "episode_return_std": "std_return",
  "episode_length": "mean_length",
  "termination_rate": "termination_rate",
  "action_saturation": "action_saturation",
}


def train(
  cfg: PPOConfig,
  run_dir: str | Path | None = None,
  *,
  resume: bool = False,
  show_progress: bool = True,
  progress_fn: Callable[[Record], None] | None = None,
  compilation_cache: bool | str | Path = True,
) -> TrainResult:
  """Trains as configured; the only place, with `logger`, that has host side effects.

  Args:
    cfg: the run's configuration (already validated by its constructor).
    run_dir: where config.json, metrics.jsonl, evals.jsonl, TensorBoard events, checkpoints,
      timings.json and the final policy go; None keeps everything in memory. Never
      overwritten.
    resume: continue the run in `run_dir` from its latest complete checkpoint; the result
      is the same as if the run had never stopped.
    show_progress: a progress bar and a line per evaluation on the console.
    progress_fn: called after each evaluation with a flat dict of the latest metrics.
    compilation_cache: JAX's persistent compilation cache (see `use_compilation_cache`): on by
      default, in the user's cache folder; a directory; or False.
  """
  if resume and run_dir is None:
    raise ValueError("resume=True needs the run_dir to resume")
  use_compilation_cache(compilation_cache)
  runner = Runner(cfg, Path(run_dir) if run_dir is not None else None, resume, show_progress)
  try:
    runner.compile()
    runner.start()
    runner.learn(progress_fn)
    report = runner.finish()
    return runner.result(report)
  finally:
    if runner.checkpoints is not None:
      runner.checkpoints.wait()
    runner.log.close()
