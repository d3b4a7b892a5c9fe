"""Host-side sinks only: the console (`ppo_jax.console`), JSON lines, TensorBoard and, optionally,
Weights & Biases (`WandbSink`; the `wandb` package is imported only for a run that asks for it).

Nothing here touches the device; `train` hands over numpy metrics once per chunk.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ppo_jax.console import Console

METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id.txt"
# The wandb.init keyword arguments `train` passes on; it sets config, dir, id and resume itself.
WANDB_KEYS = ("project", "entity", "name", "group", "tags", "notes", "mode")


# TensorBoard sections, by where a metric comes from. Names with a "/" already name their
# section (env/, label/, trpo/, eval/); a name in none of these goes to "other/".
SECTIONS = {
  "train": (
    "episode_return",
    "episode_length",
    "episodes",
    "terminations",
    "truncations",
    "sps",
    "wall_time",
  ),
  "epoch": (  # the minibatch epochs, as iteration means (the per-epoch lists are not scalars)
    "total_loss",
    "policy_loss",
    "value_loss",
    "entropy_loss",
    "approx_kl",
    "approx_kl_k1",
    "exact_kl",
    "clip_fraction",
    "zero_gradient_fraction",
    "entropy",
    "action_std",
    "action_std_min",
    "explained_variance",
    "grad_norm",
    "learning_rate",
    "minibatch_updates_applied",
    "epochs_applied",
  ),
  "update": ("update_kl", "update_approx_kl", "update_clip_fraction", "update_action_std"),
  "monitor": (
    "termination_rate",
    "action_saturation",
    "action_abs_mean",
    "episode_length_min",
    "kl_spike_threshold",
    "nonfinite_rollout",
    "nonfinite_streak",
  ),
}
_SECTION_OF = {name: section for section, names in SECTIONS.items() for name in names}
NOT_METRICS = ("iteration", "env_steps", "seed")  # a record's x-axes and panel key


def tensorboard_tag(name: str) -> str:
  """The TensorBoard tag of a metric: "<section>/<name>", so the dashboard groups itself."""
  if "/" in name:
    return name
  return f"{_SECTION_OF.get(name, 'other')}/{name}"


def is_timing(name: str) -> bool:
  """Whether a record field is a timing, which differs between otherwise identical runs."""
  return name in ("wall_time", "sps") or name.startswith("time/")


def jsonable(value: Any) -> Any:
  """numpy scalars and arrays -> JSON values, NaN and Inf -> null."""
  value = np.asarray(value)
  if value.ndim:
    return [jsonable(v) for v in value]
  value = value.item()
  return None if isinstance(value, float) and not math.isfinite(value) else value


def iteration_records(
  metrics: dict[str, np.ndarray], common: dict[str, np.ndarray], seeds: list[int]
) -> list[dict[str, Any]]:
  """A chunk's metrics -> one JSON-ready record per iteration and seed, iteration-major.

  Args:
    metrics: {name: [seeds, K, ...]} as the chunk returns them.
    common: {name: [K]} fields every seed's record of an iteration shares.
    seeds: the panel's seeds, in the order of the metrics' first axis.
  """
  count = len(next(iter(common.values())))
  return [
    {name: jsonable(value[k]) for name, value in common.items()}
    | {name: jsonable(value[i, k]) for name, value in metrics.items()}
    | {"seed": seed}
    for k in range(count)
    for i, seed in enumerate(seeds)
  ]


def records_to_arrays(records: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
  """Records -> {name: array over records}; [seeds, records] for a panel of several seeds."""

  def arrays(rows):
    return {name: column(rows, name) for name in (rows[0] if rows else ())}

  if len(seeds) == 1:
    return arrays(records)
  per_seed = [arrays([r for r in records if r["seed"] == seed]) for seed in seeds]
  return {name: np.stack([a[name] for a in per_seed]) for name in per_seed[0]}


def open_run_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
  """Checks the run directory and writes its config.json, all before anything is compiled.

  A new run needs an absent or empty directory it can create; a resumed one needs the same
  config and write access. Each failure names the path.
  """
  config_path = run_dir / CONFIG_FILE
  as_json = json.dumps(config, indent=2) + "\n"
  if resume:
    if not config_path.exists():
      raise FileNotFoundError(f"cannot resume {run_dir}: it has no {CONFIG_FILE}")
    if json.loads(config_path.read_text()) != json.loads(as_json):
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
  partial.write_text(as_json)
  os.replace(partial, config_path)


def number(value: Any) -> Any:
  """A JSON value as a float: NaN for null and anything not a number (a string), 0 and 1 for
  booleans, element-wise for lists; so a reader never breaks on an older, newer or
  half-written record."""
  if isinstance(value, list):
    return [number(v) for v in value]
  return float(value) if isinstance(value, int | float) else math.nan


def column(records: list[dict[str, Any]], name: str) -> np.ndarray:
  """One field of JSON records as floats [len(records), ...] (`number`; missing is NaN)."""
  return np.array([number(record.get(name)) for record in records], dtype=float)


def new_directory(parent: str | Path, prefix: str = "") -> Path:
  """Creates and returns parent/<prefix><date>-<time>[-n], a directory that did not exist."""
  base = Path(parent) / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}"
  base.parent.mkdir(parents=True, exist_ok=True)
  path, n = base, 1
  while True:
    try:
      path.mkdir()
      return path
    except FileExistsError:
      path, n = Path(f"{base}-{n}"), n + 1


class JsonLines:
  """Appends JSON records to a file, one per line, on disk (fsync) after each batch.

  A batch is all or nothing: a write that fails (a full disk) truncates the file back to where
  the batch began. A process killed mid-write can still leave a last line without its newline;
  `read` drops it, as the records after the latest checkpoint are redone on resume anyway.
  """

  def __init__(self, path: Path):
    self.path = path

  def write(self, records: list[dict[str, Any]]) -> None:
    data = memoryview("".join(json.dumps(record) + "\n" for record in records).encode())
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      start = os.lseek(fd, 0, os.SEEK_END)
      try:
        while data:
          data = data[os.write(fd, data) :]
        os.fsync(fd)
      except OSError as error:
        os.ftruncate(fd, start)
        raise OSError(
          error.errno,
          f"could not append {len(records)} records to {self.path} ({error.strerror}); "
          "the file is left as it was before them",
        ) from error
    finally:
      os.close(fd)

  def read(self) -> list[dict[str, Any]]:
    if not self.path.exists():
      return []
    lines = self.path.read_text().split("\n")
    # The last piece is "" after a complete file, else a line cut short by a kill.
    records = []
    for number, line in enumerate(lines[:-1], 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as error:
        raise ValueError(f"{self.path}, line {number}, is not a JSON record: {error}") from None
    return records

  def truncate(self, keep) -> list[dict[str, Any]]:
    """Keeps only the records for which keep(record) holds (e.g. up to a checkpoint).

    The file is replaced whole (a new file, then a rename), so a kill midway leaves either
    the old file or the new one.
    """
    records = [r for r in self.read() if keep(r)]
    partial = self.path.with_name(self.path.name + ".partial")
    try:
      with partial.open("w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
      os.replace(partial, self.path)
    finally:
      partial.unlink(missing_ok=True)
    return records


def check_wandb(settings: Any) -> dict[str, Any] | None:
  """`train`'s wandb argument, checked before anything is built: ValueError, ImportError."""
  keys = ", ".join(WANDB_KEYS)
  if settings is not None and not (isinstance(settings, dict) and set(settings) <= set(WANDB_KEYS)):
    raise ValueError(
      f"wandb ({settings!r}) must be None or a dict of wandb.init arguments among {keys} "
      "(train sets config, dir, id and resume itself)"
    )
  if settings is not None and importlib.util.find_spec("wandb") is None:
    raise ImportError('wandb=... needs the wandb package: pip install -e ".[wandb]"')
  return settings


class WandbSink:
  """A Weights & Biases run with the run's config, at step = env_steps. With a run directory
  its files go there, and its id, in WANDB_ID_FILE, makes a resumed run go on in the same one."""

  def __init__(self, settings: dict, config: dict, run_dir: Path | None, resume: bool):
    import wandb

    self.wandb, where = wandb, {}
    if run_dir is not None:
      id_file = run_dir / WANDB_ID_FILE
      if not (resume and id_file.exists()):
        id_file.write_text(os.urandom(8).hex() + "\n")  # on disk before W&B sees it
      where = dict(dir=str(run_dir), id=id_file.read_text().strip(), resume="allow")
    self.run = wandb.init(**settings, **where, config=config)

  def log(self, values: dict[str, Any], step: int | None = None) -> None:
    self.run.log(values, step=step)

  def image(self, path: Path) -> Any:
    return self.wandb.Image(str(path))

  def close(self, failed: bool) -> None:
    self.run.finish(exit_code=int(failed))


class RunLogger:
  """Writes a run's metrics to its directory (JSONL, TensorBoard), the console and W&B.

  Args:
    run_dir: the run directory, or None for console only.
    total_steps: env steps of the whole run (for the progress bar and its ETA).
    show_progress: draw a progress bar and a line per evaluation (alerts are shown either
      way, see `ppo_jax.console`).
    panel: records carry several seeds; TensorBoard tags and eval lines then name the seed.
    wandb: a W&B run that gets what TensorBoard gets, and the final plot; None for none.
  """

  def __init__(
    self,
    run_dir: Path | None,
    total_steps: int,
    show_progress: bool,
    panel: bool = False,
    wandb: WandbSink | None = None,
  ):
    self.panel, self.wandb = panel, wandb
    self.metrics = JsonLines(run_dir / METRICS_FILE) if run_dir else None
    self.evals = JsonLines(run_dir / EVALS_FILE) if run_dir else None
    self.tensorboard = None
    if run_dir:
      from tensorboardX import SummaryWriter

      self.tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR), flush_secs=30)
    self.console = Console(total_steps, show_progress)

  def phase(self, name: str) -> None:
    """Shows the phase now running on the progress bar."""
    self.console.phase(name)

  def start(self, env_steps: int) -> None:
    self.console.start(env_steps)

  def message(self, text: str) -> None:
    """A line on the console (flushed), above the progress bar; none without one."""
    self.console.message(text)

  def alert(self, text: str) -> None:
    """A line that is shown with or without a progress bar (see `Console.alert`)."""
    self.console.alert(text)

  def _tag(self, record: dict[str, Any], name: str) -> str:
    """The metric's tag; a panel's seeds get a subsection each, side by side in the section."""
    section, _, rest = tensorboard_tag(name).partition("/")
    return f"{section}/seed_{record['seed']}/{rest}" if self.panel else f"{section}/{rest}"

  def _scalars(self, record: dict[str, Any], names: list[str]) -> None:
    """The record's fields `names` to TensorBoard and W&B under their tags, at its env_steps."""
    scalars = {self._tag(record, name): record[name] for name in names}
    if self.tensorboard is not None:
      for tag, value in scalars.items():
        self.tensorboard.add_scalar(tag, value, record["env_steps"])
    if self.wandb is not None:
      self.wandb.log(scalars, record["env_steps"])

  def log_iterations(self, records: list[dict[str, Any]]) -> None:
    if self.metrics is not None:
      self.metrics.write(records)
    for record in records:
      keep = [n for n, v in record.items() if isinstance(v, int | float) and n not in NOT_METRICS]
      self._scalars(record, keep)
    self.console.progress(records[-1])

  def log_eval(self, record: dict[str, Any]) -> None:
    if self.evals is not None:
      self.evals.write([record])
    self._scalars(record, [n for n, v in record.items() if n.startswith("eval/") and v is not None])
    seed = f" seed {record['seed']}" if self.panel else ""
    self.message(
      f"eval @ {record['env_steps']:>12,d} steps{seed}: return {record['eval/episode_return']:.2f} "
      f"+- {record['eval/episode_return_std']:.2f}, length {record['eval/episode_length']:.0f}, "
      f"terminated {record['eval/termination_rate']:.0%}"
    )

  def log_plot(self, path: Path) -> None:
    """The end-of-run plot, to W&B as an image at the last step logged."""
    if self.wandb is not None:
      self.wandb.log({"plot": self.wandb.image(path)})

  def close(self, failed: bool = False) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()
    self.console.close()
    if self.wandb is not None:
      self.wandb.close(failed)
