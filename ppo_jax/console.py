"""The run's console: a progress bar, lines above it, and alerts that are never lost.

Every line is flushed as it is written, so that a run whose output goes to a pipe (a cluster's
log file, `nohup`, `tee`, a remote runner) shows it at once rather than in bursts or never. The
progress bar draws on stderr; lines go to stdout. Without a progress bar (`show_progress=False`)
the console stays quiet but for alerts (`alert`: a phase that waits too long), which then go to
stderr.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

# What the progress bar shows of an iteration's record: (key, label, format).
POSTFIX = (
  ("sps", "SPS", "{:,.0f}"),
  ("episode_return", "return", "{:.1f}"),
  ("approx_kl", "kl", "{:.4f}"),
  ("clip_fraction", "clip", "{:.3f}"),
)


class Console:
  """A progress bar over a run's env steps, with the lines of the run above it.

  Args:
    total_steps: env steps of the whole run (for the progress bar and its ETA).
    show_progress: draw the progress bar and write lines; alerts are written either way.
  """

  def __init__(self, total_steps: int, show_progress: bool):
    self.bar = (
      tqdm(total=total_steps, unit="step", unit_scale=True, dynamic_ncols=True, smoothing=0.3)
      if show_progress
      else None
    )

  def phase(self, name: str) -> None:
    """Shows the phase now running on the progress bar."""
    if self.bar is not None:
      self.bar.set_description_str(name, refresh=True)

  def start(self, env_steps: int) -> None:
    if self.bar is not None:
      self.bar.update(env_steps - self.bar.n)

  def progress(self, record: dict[str, Any]) -> None:
    """Moves the bar to the record's env steps and shows its SPS, return, KL and clip fraction."""
    if self.bar is None:
      return
    self.bar.update(record["env_steps"] - self.bar.n)
    shown = [(k, label, fmt) for k, label, fmt in POSTFIX if record.get(k) is not None]
    text = " ".join(f"{label} {fmt.format(record[k])}" for k, label, fmt in shown)
    self.bar.set_postfix_str(text, refresh=True)

  def message(self, text: str) -> None:
    """A line on stdout above the progress bar, flushed; none without a progress bar."""
    if self.bar is not None:
      self.bar.write(text, file=sys.stdout)
      sys.stdout.flush()

  def alert(self, text: str) -> None:
    """A line that must be seen: above the progress bar, else on stderr; flushed either way."""
    if self.bar is not None:
      self.message(text)
    else:
      print(text, file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
