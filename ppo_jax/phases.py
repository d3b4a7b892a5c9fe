"""Where a run's wall time goes: every phase timed, and a long phase that says what it waits for.

`Phases` is a host-side stopwatch. `with phases("eval", "the evaluation episodes"):` times a
block under a phase name; a block that runs longer than `warn_after` seconds prints a line
naming what it waits for (and again every `warn_after` seconds, with every thread's stack at the
second line: `ppo_jax.watchdog`), so a run never looks stuck and a stalled one names its line.
Phases do not nest: the time of each block counts once, and the phases together account for
the wall time, but for the little the runner does between blocks (reported as unaccounted).

`write_timings` keeps the totals in the run directory's timings.json, rewritten after every
chunk of training, so that a run that is killed keeps them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

from ppo_jax.watchdog import Watchdog

TIMINGS_FILE = "timings.json"

# The phases of a run, in the order a run meets them.
ORDER = (
  "setup",
  "env",
  "compile",
  "restore",
  "init",
  "train",
  "eval",
  "checkpoint",
  "log",
  "analysis",
  "save",
)


class Phases:
  """Seconds per phase since the run started, and since the last `lap()`.

  Args:
    message: prints a line where it is seen (the console's alerts); none by default.
    status: shows the phase now running (the progress bar's description), if given.
    warn_after: seconds after which a phase says what it waits for; `watchdog.interval()`
      (30 s, or $PPO_JAX_WATCHDOG_SECONDS) by default.
  """

  def __init__(
    self,
    message: Callable[[str], None] = lambda line: None,
    status: Callable[[str], None] | None = None,
    warn_after: float | None = None,
  ):
    self.message, self.status = message, status
    self.watchdog = Watchdog(lambda line: self.message(line), warn_after)
    self.started = time.perf_counter()
    self.totals: dict[str, float] = {}
    self._since_lap: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, name: str, waiting_for: str) -> Iterator[None]:
    """Times the block as phase `name`; `waiting_for` completes "still waiting for ..."."""
    if self.status is not None:
      self.status(name)
    started = time.perf_counter()
    try:
      with self.watchdog.watch(name, waiting_for):
        yield
    finally:
      seconds = time.perf_counter() - started
      for table in (self.totals, self._since_lap):
        table[name] = table.get(name, 0.0) + seconds

  def since(self, before: dict[str, float]) -> dict[str, float]:
    """Seconds per phase since `before`, a copy of `totals` taken then (phases that ran)."""
    names = sorted(self.totals, key=lambda n: (ORDER.index(n.split("/")[0]), n))
    return {
      name: self.totals[name] - before.get(name, 0.0)
      for name in names
      if self.totals[name] > before.get(name, 0.0)
    }

  def wall(self) -> float:
    """Seconds since the run started."""
    return time.perf_counter() - self.started

  def lap(self) -> dict[str, float]:
    """Seconds per phase since the last lap (or the start), and starts a new lap."""
    lap, self._since_lap = self._since_lap, {}
    return lap

  def summary(self) -> dict[str, float]:
    """{"<phase>": seconds, ..., "unaccounted": ..., "wall": ...}, phases in ORDER."""
    wall = self.wall()
    names = sorted(self.totals, key=lambda n: (ORDER.index(n.split("/")[0]), n))
    timings = {name: self.totals[name] for name in names}
    timings["unaccounted"] = max(wall - sum(timings.values()), 0.0)
    timings["wall"] = wall
    return timings


def format_table(timings: dict[str, float]) -> str:
  """A console table of `Phases.summary()`: seconds and share of the wall."""
  wall = timings["wall"]
  lines = [f"{'phase':<20} {'seconds':>9} {'share':>7}"]
  for name, seconds in timings.items():
    lines.append(f"{name:<20} {seconds:>9.2f} {seconds / wall if wall else 0.0:>7.1%}")
  return "\n".join(lines)


def peak_memory_bytes() -> int | None:
  """The largest peak of memory in use of this process's devices, where the backend reports it
  (GPUs and TPUs do, the CPU does not: None)."""
  peaks = [(device.memory_stats() or {}).get("peak_bytes_in_use") for device in jax.local_devices()]
  peaks = [peak for peak in peaks if peak is not None]
  return max(peaks) if peaks else None


def chunk_timings(number: int, record: dict[str, Any], seconds: dict[str, float]) -> dict:
  """timings.json's entry of chunk `number` (from 1): its last record's iteration, env steps and
  SPS, the seconds of each phase from its start to its checkpoint, the devices' peak memory."""
  return {
    "chunk": number,
    "iteration": record["iteration"],
    "env_steps": record["env_steps"],
    "sps": record["sps"],
    "seconds": seconds,
    "peak_memory_bytes": peak_memory_bytes(),
  }


def write_timings(
  run_dir: Path,
  timings: dict[str, float],
  compile_seconds: dict[str, float],
  chunks: list[dict],
  complete: bool,
) -> None:
  """Writes timings.json: "phases" (`Phases.summary()`), "compile" (seconds per program),
  "chunks" (`chunk_timings`, this process's), "peak_memory_bytes" and "complete" (false until
  the run has ended). Written whole, then renamed: a kill never leaves half a file."""
  record = {
    "phases": timings,
    "compile": compile_seconds,
    "chunks": chunks,
    "peak_memory_bytes": peak_memory_bytes(),
    "complete": complete,
  }
  path = Path(run_dir) / TIMINGS_FILE
  partial = path.with_name(path.name + ".partial")
  partial.write_text(json.dumps(record, indent=2) + "\n")
  os.replace(partial, path)
