"""What the experiment scripts share: intervals over seeds, result tables, curve bands.

A row maps a column to (mean, half-width of its 95% interval); a figure with no interval
(a panel's SPS, a wall time) has NaN for the half-width.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import stats

Row = dict[str, tuple[float, float]]


def mean_and_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
  """(mean, half-width of the Student t interval) over seeds; the half-width is NaN for one."""
  values = np.asarray(values, float)
  n = values.size
  mean = float(np.mean(values))
  if n < 2:
    return mean, float("nan")
  sem = float(np.std(values, ddof=1)) / np.sqrt(n)
  return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sem)


def cell(mean: float, half: float) -> str:
  """'mean ± half' for a table, or the mean alone when there is no interval (a whole number
  in full: env steps, updates)."""
  if np.isnan(half):
    return f"{int(mean):,d}" if float(mean).is_integer() else f"{mean:.4g}"
  return f"{mean:.4g} ± {half:.2g}"


def write_tables(rows: dict[str, Row], out: Path, label: str = "algorithm") -> None:
  """table.csv (a row per entry: mean and ci95 columns) and table.md (a column per entry,
  mean ± ci95) of entry name -> row."""
  names = list(next(iter(rows.values())))
  with (out / "table.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow([label] + [f"{n}_{part}" for n in names for part in ("mean", "ci95")])
    for entry, row in rows.items():
      writer.writerow([entry] + [f"{v:.6g}" for n in names for v in row[n]])
  lines = ["| metric | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
  lines += [f"| {n} | " + " | ".join(cell(*row[n]) for row in rows.values()) + " |" for n in names]
  (out / "table.md").write_text("\n".join(lines) + "\n")


def plot_band(ax, steps: np.ndarray, values: np.ndarray, label: str) -> None:
  """The mean over seeds of `values` [seeds, points] against `steps` [points], with its 95%
  interval as a band when there are several seeds."""
  mean = np.nanmean(values, axis=0)
  half = np.array([mean_and_interval(values[:, i])[1] for i in range(values.shape[1])])
  (line,) = ax.plot(steps, mean, label=f"{label} ({values.shape[0]} seeds)")
  if np.isfinite(half).any():
    ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2)
