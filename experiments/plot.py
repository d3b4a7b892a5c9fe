"""Plot one or more training runs: returns and the trust-region diagnostics, against env steps.

python -m experiments.plot RUN_DIR [RUN_DIR ...] [--output PATH]

A run directory holds `config.json`, `metrics.jsonl` (one object per iteration) and
`evals.jsonl` (one object per evaluation), as written by the trainer. Files may still be
growing: a half-written last line is skipped, and so are keys this script does not know.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Figure is used without pyplot, so the caller's backend (and pyplot's global state) is untouched.
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FuncFormatter

from ppo_jax.logger import column, number

_STEPS = "env_steps"


class Run(NamedTuple):
  """One run directory, read.

  Attributes:
    label: legend text, "<dir name> (<env>)".
    config: config.json, or {} when it is missing or unreadable.
    metrics: metrics.jsonl, one dict per iteration.
    evals: evals.jsonl, one dict per evaluation.
  """

  label: str
  config: dict
  metrics: list[dict]
  evals: list[dict]


def read_jsonl(path: Path) -> list[dict]:
  """Records of a JSONL file; [] if it is missing. Lines that do not parse are skipped."""
  if not path.is_file():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # blank, or the trainer is mid-write
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


def read_run(run_dir: str | Path, name: str | None = None) -> Run:
  """Reads a run directory.

  Args:
    run_dir: directory holding metrics.jsonl (and optionally config.json, evals.jsonl).
    name: legend name; the directory's name if None.
  Returns:
    The Run.
  Raises:
    FileNotFoundError: naming the directory, when it or its metrics.jsonl does not exist.
  """
  run_dir = Path(run_dir)
  if not run_dir.is_dir():
    raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
  if not (run_dir / "metrics.jsonl").is_file():
    raise FileNotFoundError(f"run directory {str(run_dir)!r} has no metrics.jsonl")
  try:
    config = json.loads((run_dir / "config.json").read_text())
  except (OSError, json.JSONDecodeError):
    config = {}
  if not isinstance(config, dict):
    config = {}
  name = name or run_dir.resolve().name
  label = f"{name} ({config['env']})" if config.get("env") else name
  return Run(
    label, config, read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "evals.jsonl")
  )


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, values) of a scalar key, keeping only records where both are finite.

  Values that share a step (the seeds of a seed panel) are averaged.

  Returns:
    Two float arrays of the same length [N], possibly empty.
  """
  xy = np.stack([column(records, _STEPS), column(records, key)], axis=-1).reshape(-1, 2)
  xy = xy[np.isfinite(xy).all(axis=1)]
  steps, inverse = np.unique(xy[:, 0], return_inverse=True)
  if steps.size == len(xy):
    return xy[:, 0], xy[:, 1]
  return steps, np.bincount(inverse, weights=xy[:, 1]) / np.bincount(inverse)


def per_epoch(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Flattens a per-epoch list metric ("<name>_per_epoch").

  Epoch counts may differ between iterations (an early stop leaves fewer, or NaN, entries).

  Returns:
    (env steps, epoch index from 0, value), three arrays [N] with finite values only.
  """
  rows = []
  for record in records:
    steps, values = number(record.get(_STEPS)), record.get(key)
    if not math.isfinite(steps) or not isinstance(values, list):
      continue
    rows += [(steps, epoch, number(v)) for epoch, v in enumerate(values)]
  rows = np.array([r for r in rows if math.isfinite(r[2])], float).reshape(-1, 3)
  return rows[:, 0], rows[:, 1], rows[:, 2]


def epoch_mean(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, mean over epochs) per iteration of a per-epoch list metric."""
  steps, _, values = per_epoch(records, key)
  if not steps.size:
    return steps, values
  xs, inverse = np.unique(steps, return_inverse=True)
  return xs, np.bincount(inverse, weights=values) / np.bincount(inverse)


def _shade(color, fraction: float):
  """The color blended toward white: fraction 0 is pale, 1 is the color itself."""
  from matplotlib.colors import to_rgb

  rgb = np.asarray(to_rgb(color))
  return tuple(1.0 - (0.35 + 0.65 * fraction) * (1.0 - rgb))


def _no_data(ax) -> None:
  ax.set_yticks([])
  ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _style_legend(ax, styles: dict[str, dict]) -> None:
  """A grey legend of the line styles in a panel; the colors (runs) are in the figure's legend."""
  if styles:
    handles = [Line2D([], [], color="0.3", label=label, **style) for label, style in styles.items()]
    ax.legend(handles=handles, loc="best", fontsize="small")


def _plot_return(ax, runs: list[Run], colors: list) -> bool:
  styles = {}
  for run, color in zip(runs, colors, strict=True):
    x, y = series(run.evals, "eval/episode_return")
    if x.size:
      ax.plot(x, y, color=color, lw=1.8, marker="o", ms=4)
      xs, std = series(run.evals, "eval/episode_return_std")
      if xs.size == x.size and np.array_equal(xs, x):
        ax.fill_between(x, y - std, y + std, color=color, alpha=0.15, lw=0)
      styles["eval (± std)"] = dict(lw=1.8, marker="o", ms=4)
  for run, color in zip(runs, colors, strict=True):
    x, y = series(run.metrics, "episode_return")
    if x.size:
      ax.plot(x, y, color=color, lw=0.9, alpha=0.6)
      styles["train"] = dict(lw=0.9, alpha=0.6)
  ax.set_ylabel("episode return")
  _style_legend(ax, styles)
  return bool(styles)


def _plot_kl(ax, runs: list[Run], colors: list) -> bool:
  drawn, positive, epochs_drawn = False, True, False
  for run, color in zip(runs, colors, strict=True):
    steps, epoch, values = per_epoch(run.metrics, "approx_kl_per_epoch")
    if steps.size:
      epochs_drawn = True
      last = max(epoch.max(), 1.0)
      ax.scatter(
        steps, values, s=9 + 9 * epoch / last, lw=0, c=[_shade(color, e / last) for e in epoch]
      )
      x, y = epoch_mean(run.metrics, "approx_kl_per_epoch")
    else:  # no per-epoch lists: the iteration's scalar
      x, y = series(run.metrics, "approx_kl")
    if x.size:
      ax.plot(x, y, color=color, lw=1.2)
      drawn = True
      positive &= bool(np.all(y > 0)) and bool(np.all(values > 0))
    target_kl = run.config.get("target_kl")
    if isinstance(target_kl, int | float) and x.size:
      stop = target_kl * number(run.config.get("target_kl_factor", 1.0))
      ax.axhline(stop, color=color, lw=0.9, ls=":")
  if drawn and positive:
    ax.set_yscale("log")
  ax.set_ylabel("approx KL")
  styles = {}
  if epochs_drawn:
    styles["per epoch (pale = first)"] = dict(lw=0, marker="o", ms=4)
  if drawn:
    styles["iteration mean"] = dict(lw=1.2)
  if drawn and any(isinstance(r.config.get("target_kl"), int | float) for r in runs):
    styles["early stop"] = dict(lw=0.9, ls=":")
  _style_legend(ax, styles)
  return drawn


def _plot_scalar(ax, runs: list[Run], colors: list, key: str, ylabel: str) -> bool:
  drawn = False
  for run, color in zip(runs, colors, strict=True):
    x, y = series(run.metrics, key)
    if x.size:
      ax.plot(x, y, color=color, lw=1.2)
      drawn = True
  ax.set_ylabel(ylabel)
  return drawn


def _plot_entropy(ax, runs: list[Run], colors: list) -> bool:
  std_ax = ax.twinx()
  lines = (  # key, axis, style, legend label
    ("entropy", ax, dict(lw=1.2), "entropy (left)"),
    ("action_std", std_ax, dict(lw=1.0, ls="-."), "action std, mean (right)"),
    ("action_std_min", std_ax, dict(lw=1.0, ls="--"), "action std, min (right)"),
  )
  styles = {}
  for key, axis, style, label in lines:
    for run, color in zip(runs, colors, strict=True):
      x, y = series(run.metrics, key)
      if x.size:
        axis.plot(x, y, color=color, **style)
        styles[label] = style
  if "entropy (left)" in styles:
    ax.set_ylabel("entropy")
  elif styles:
    ax.set_yticks([])
  if len(styles) > ("entropy (left)" in styles):
    std_ax.set_ylabel("action std")
  else:
    std_ax.set_axis_off()
  _style_legend(ax, styles)
  return bool(styles)


def _plot_learning_rate(ax, runs: list[Run], colors: list) -> bool:
  drawn = _plot_scalar(ax, runs, colors, "learning_rate", "learning rate")
  rates = np.concatenate([series(r.metrics, "learning_rate")[1] for r in runs])
  adaptive = any(r.config.get("learning_rate_schedule") == "ADAPTIVE_KL" for r in runs)
  if drawn and adaptive and rates.min() > 0:  # it moves by factors of 1.5
    ax.set_yscale("log")
  elif drawn:
    # Not the default "1e-4" offset text, which would sit on the panel's title.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda rate, _: f"{rate:.1e}" if rate else "0"))
  return drawn


def _plot_explained_variance(ax, runs: list[Run], colors: list) -> bool:
  drawn = _plot_scalar(ax, runs, colors, "explained_variance", "explained variance")
  if drawn:
    low = min(series(r.metrics, "explained_variance")[1].min(initial=1.0) for r in runs)
    # Early values can be hugely negative; below -1 the value function is useless anyway.
    ax.set_ylim(max(low, -1.0) - 0.05, 1.05)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    if low < -1.0:
      ax.text(0.99, 0.03, "axis cut at -1", transform=ax.transAxes, ha="right", color="0.5")
  return drawn


def _labels(run_dirs: Sequence[str | Path]) -> list[str]:
  """Directory names, or their last two parts where names repeat (seed0 under two sweeps)."""
  paths = [Path(d).resolve() for d in run_dirs]
  names = [p.name for p in paths]
  if len(set(names)) == len(names):
    return names
  return ["/".join(p.parts[-2:]) for p in paths]


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
  """Draws the runs (see `make_figure`) into a PNG; its parent directory is created.

  Returns:
    The output path.
  """
  output = Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  make_figure(run_dirs).savefig(output, dpi=100)
  return output


def make_figure(run_dirs: Sequence[str | Path]) -> Figure:
  """The runs as one figure of panels sharing the env-steps axis.

  Panels: episode return (eval with a ± std band, train thinner); approx KL per epoch
  (dots shaded by epoch, a line through each iteration's mean); clip fraction; entropy and
  action std (twin axis); learning rate; explained variance. One color per run.

  Args:
    run_dirs: run directories, each holding metrics.jsonl.
  Raises:
    FileNotFoundError: naming a run directory that, or whose metrics.jsonl, does not exist.
    ValueError: if run_dirs is empty.
  """
  if not run_dirs:
    raise ValueError("plot_runs needs at least one run directory")
  runs = [read_run(d, name) for d, name in zip(run_dirs, _labels(run_dirs), strict=True)]
  palette = [f"C{i % 10}" for i in range(len(runs))]

  labels = [r.label + ("" if r.metrics else ": no data") for r in runs]
  # About 120 characters fit across the figure; a legend entry's line takes about 8.
  legend_cols = max(1, min(len(runs), 120 // (max(map(len, labels)) + 8)))
  legend_rows = math.ceil(len(runs) / legend_cols)
  fig = Figure(figsize=(10, 17 + 0.25 * (legend_rows - 1)))
  # A fixed layout: constrained layout would double the drawing time for little gain here.
  top = 1.0 - (0.75 + 0.25 * legend_rows) / fig.get_figheight()
  fig.subplots_adjust(left=0.09, right=0.91, top=top, bottom=0.04, hspace=0.22)
  axes = fig.subplots(6, 1, sharex=True)
  panels = [
    (_plot_return, "Return"),
    (_plot_kl, "Approx KL (k3) per epoch"),
    (lambda ax, r, c: _plot_scalar(ax, r, c, "clip_fraction", "clip fraction"), "Clip fraction"),
    (_plot_entropy, "Policy entropy and action std"),
    (_plot_learning_rate, "Learning rate"),
    (_plot_explained_variance, "Explained variance of the value function"),
  ]
  any_data = False
  for ax, (draw, title) in zip(axes, panels, strict=True):
    ax.set_title(title, loc="left", fontsize="medium")
    ax.grid(True, alpha=0.3)
    if draw(ax, runs, palette):
      any_data = True
    else:
      _no_data(ax)
  axes[-1].set_xlabel("env steps")
  if any_data:
    axes[-1].xaxis.set_major_formatter(EngFormatter(sep=""))
  else:
    axes[-1].set_xticks([])
  fig.legend(
    handles=[
      Line2D([], [], color=c, lw=2, label=label) for label, c in zip(labels, palette, strict=True)
    ],
    loc="upper center",
    bbox_to_anchor=(0.5, 0.995),
    ncols=legend_cols,
    frameon=False,
  )
  return fig


def main(argv: list[str] | None = None) -> Path:
  """CLI entry point; returns the path written."""
  parser = argparse.ArgumentParser(
    prog="python -m experiments.plot",
    description="Plot training runs (metrics.jsonl, evals.jsonl) against env steps.",
  )
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to overlay")
  parser.add_argument(
    "--output",
    "-o",
    help="PNG to write (default: RUN_DIR/plot.png for one run, ./comparison.png for several)",
  )
  args = parser.parse_args(argv)
  for run_dir in args.run_dirs:
    if not Path(run_dir).is_dir():
      parser.error(f"run directory {run_dir!r} does not exist")
    if not (Path(run_dir) / "metrics.jsonl").is_file():
      parser.error(f"run directory {run_dir!r} has no metrics.jsonl")
  output = args.output
  if output is None:
    output = Path(args.run_dirs[0]) / "plot.png" if len(args.run_dirs) == 1 else "comparison.png"
  path = plot_runs(args.run_dirs, output)
  print(path)
  return path


if __name__ == "__main__":
  main()
