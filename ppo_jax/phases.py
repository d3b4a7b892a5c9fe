"""Where a run's wall time goes: every phase timed, and a long phase that says what it waits for.

`Phases` is a host-side stopwatch. `with phases("eval", "the evaluation episodes"):` times a
block under a phase name; a block that runs longer than `warn_after` seconds prints a line
naming what it waits for (and again every `warn_after` seconds), so a run never looks stuck.
Phases do not nest: the time of each block counts once, and the phases together account for
the wall time, but for the little the runner does between blocks (reported as unaccounted).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

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
    message: prints a line (the console, above the progress bar); none by default.
    status: shows the phase now running (the progress bar's description), if given.
    warn_after: seconds after which a phase says what it waits for.
  """

  def __init__(
    self,
    message: Callable[[str], None] = lambda line: None,
    status: Callable[[str], None] | None = None,
    warn_after: float = 30.0,
  ):
    self.message, self.status, self.warn_after = message, status, warn_after
    self.started = time.perf_counter()
    self.totals: dict[str, float] = {}
    self._since_lap: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, name: str, waiting_for: str) -> Iterator[None]:
    """Times the block as phase `name`; `waiting_for` completes "still waiting for ..."."""
    if self.status is not None:
      self.status(name)
    started = time.perf_counter()
    done = threading.Event()

    def watch():
      while not done.wait(self.warn_after):
        waited = time.perf_counter() - started
        self.message(f"{name}: still waiting for {waiting_for} after {waited:.0f} s")

    watchdog = threading.Thread(target=watch, name=f"phase {name}", daemon=True)
    watchdog.start()
    try:
      yield
    finally:
      done.set()
      seconds = time.perf_counter() - started
      for table in (self.totals, self._since_lap):
        table[name] = table.get(name, 0.0) + seconds

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
