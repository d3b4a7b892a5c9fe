"""Training runs drawn as one figure: returns, trust-region diagnostics, safety signals, and
where the failure labels fired, against env steps.

`train(cfg, run_dir)` writes a run's `plot.png` with `plot_runs`; `python -m experiments.plot`
overlays several runs. A run directory is read by `ppo_jax.records`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Figure is used without pyplot, so the caller's backend (and pyplot's global state) is untouched.
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FuncFormatter

from ppo_jax.logger import number
from ppo_jax.records import Run, epoch_mean, fired, per_epoch, read_run, series

PLOT_FILE = "plot.png"

# Each failure label (ppo_jax.monitor) is marked on the panel of the metric it is decided from,
# at that metric's value where it fired: (metric, marker style). `nonfinite` has no value (its
# update was skipped and touched every quantity): a dotted vertical line on every panel.
MARKS = {
  "kl_spike": ("update_kl", dict(marker="X", ms=8)),
  "clip_saturated": ("update_clip_fraction", dict(marker="^", ms=7)),
  "clip_idle": ("update_clip_fraction", dict(marker="v", ms=7)),
  "entropy_collapse": ("update_action_std", dict(marker="X", ms=8)),
  "return_drop": ("episode_return", dict(marker="v", ms=7)),
}
_NONFINITE = dict(lw=1.0, ls=":", alpha=0.9)

# What a panel drew, as legend text -> line style ({} where one line needs no legend); None
# when it had nothing to draw.
Styles = dict[str, dict]


def _shade(color, fraction: float):
  """The color blended toward white: fraction 0 is pale, 1 is the color itself."""
  rgb = np.asarray(to_rgb(color))
  return tuple(1.0 - (0.35 + 0.65 * fraction) * (1.0 - rgb))


def _no_data(ax) -> None:
  ax.set_yticks([])
  ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _style_legend(ax, styles: Styles) -> None:
  """A grey legend of the line styles in a panel; the colors (runs) are in the figure's legend."""
  if styles:
    handles = [Line2D([], [], color="0.3", label=label, **style) for label, style in styles.items()]
    ax.legend(handles=handles, loc="best", fontsize="small")


def _lines(ax, runs: list[Run], colors: list, key: str, style: dict, evals: bool = False) -> bool:
  """Draws `key` of each run (its metrics, or its evals) in the run's color; whether any was."""
  drawn = False
  for run, color in zip(runs, colors, strict=True):
    x, y = series(run.evals if evals else run.metrics, key)
    if x.size:
      ax.plot(x, y, color=color, label=key, **style)
      drawn = True
  return drawn


def _mark(ax, runs: list[Run], colors: list, labels: Sequence[str], styles: Styles) -> None:
  """Marks where each of `labels` fired, at its metric's value; adds their legend entries."""
  for label in labels:
    key, style = MARKS[label]
    for run, color in zip(runs, colors, strict=True):
      x, y = fired(run.metrics, label, key)
      keep = np.isfinite(y)
      if keep.any():
        ax.plot(
          x[keep], y[keep], ls="none", color=color, mec="black", mew=0.6, label=label, **style
        )
        styles[f"{label} fired"] = dict(ls="none", mec="black", mew=0.6, **style)


def _plot_return(ax, runs: list[Run], colors: list) -> Styles | None:
  styles = {}
  for run, color in zip(runs, colors, strict=True):
    x, y = series(run.evals, "eval/episode_return")
    if x.size:
      ax.plot(x, y, color=color, lw=1.8, marker="o", ms=4, label="eval/episode_return")
      xs, std = series(run.evals, "eval/episode_return_std")
      if xs.size == x.size and np.array_equal(xs, x):
        ax.fill_between(x, y - std, y + std, color=color, alpha=0.15, lw=0)
      styles["eval (± std)"] = dict(lw=1.8, marker="o", ms=4)
  if _lines(ax, runs, colors, "episode_return", dict(lw=0.9, alpha=0.6)):
    styles["train"] = dict(lw=0.9, alpha=0.6)
  _mark(ax, runs, colors, ["return_drop"], styles)
  ax.set_ylabel("episode return")
  return styles or None


def _plot_kl(ax, runs: list[Run], colors: list) -> Styles | None:
  styles, positive = {}, True
  for run, color in zip(runs, colors, strict=True):
    steps, epoch, values = per_epoch(run.metrics, "approx_kl_per_epoch")
    if steps.size:
      last = max(epoch.max(), 1.0)
      ax.scatter(
        steps, values, s=9 + 9 * epoch / last, lw=0, c=[_shade(color, e / last) for e in epoch]
      )
      styles["per epoch (pale = first)"] = dict(lw=0, marker="o", ms=4)
      x, y = epoch_mean(run.metrics, "approx_kl_per_epoch")
    else:  # no per-epoch lists: the iteration's scalar
      x, y = series(run.metrics, "approx_kl")
    if x.size:
      ax.plot(x, y, color=color, lw=1.2, label="approx_kl")
      styles["iteration mean"] = dict(lw=1.2)
      positive &= bool(np.all(y > 0)) and bool(np.all(values > 0))
    target_kl = run.config.get("target_kl")
    if isinstance(target_kl, int | float) and x.size:
      stop = target_kl * number(run.config.get("target_kl_factor", 1.0))
      ax.axhline(stop, color=color, lw=0.9, ls=":")
      styles["early stop"] = dict(lw=0.9, ls=":")
  for run, color in zip(runs, colors, strict=True):
    x, y = series(run.metrics, "update_kl")
    if x.size:
      ax.plot(x, y, color=color, lw=1.0, ls="--", label="update_kl")
      styles["whole update"] = dict(lw=1.0, ls="--")
      positive &= bool(np.all(y > 0))
  _mark(ax, runs, colors, ["kl_spike"], styles)
  if styles and positive:
    ax.set_yscale("log")
  ax.set_ylabel("approx KL")
  return styles or None


def _plot_clip_fraction(ax, runs: list[Run], colors: list) -> Styles | None:
  styles = {}
  if _lines(ax, runs, colors, "clip_fraction", dict(lw=1.2)):
    styles["epoch mean"] = dict(lw=1.2)
  if _lines(ax, runs, colors, "update_clip_fraction", dict(lw=1.0, ls="--")):
    styles["whole update"] = dict(lw=1.0, ls="--")
  _mark(ax, runs, colors, ["clip_saturated", "clip_idle"], styles)
  ax.set_ylabel("clip fraction")
  return styles or None


def _plot_entropy(ax, runs: list[Run], colors: list) -> Styles | None:
  std_ax = ax.twinx()
  lines = (  # key, axis, style, legend label
    ("entropy", ax, dict(lw=1.2), "entropy (left)"),
    ("action_std", std_ax, dict(lw=1.0, ls="-."), "action std, mean (right)"),
    ("action_std_min", std_ax, dict(lw=1.0, ls="--"), "action std, min (right)"),
  )
  styles = {}
  for key, axis, style, label in lines:
    if _lines(axis, runs, colors, key, style):
      styles[label] = style
  _mark(std_ax, runs, colors, ["entropy_collapse"], styles)
  has_entropy = "entropy (left)" in styles
  if has_entropy:
    ax.set_ylabel("entropy")
  elif styles:
    ax.set_yticks([])
  if len(styles) > has_entropy:
    std_ax.set_ylabel("action std")
  else:
    std_ax.set_axis_off()
  return styles or None


def _plot_safety(ax, runs: list[Run], colors: list) -> Styles | None:
  lines = (  # key, from evals, style, legend label
    ("termination_rate", False, dict(lw=1.2), "termination rate"),
    ("action_saturation", False, dict(lw=1.0, ls="--"), "action saturation"),
    ("eval/termination_rate", True, dict(lw=0, marker="o", ms=4), "termination rate (eval)"),
  )
  styles = {}
  for key, evals, style, label in lines:
    if _lines(ax, runs, colors, key, style, evals):
      styles[label] = style
  ax.set_ylim(-0.04, 1.04)  # both are fractions
  ax.set_ylabel("fraction")
  return styles or None


def constant_rate(run: Run) -> float | None:
  """The run's learning rate if it never changed (None if it did, or was not recorded)."""
  _, rates = series(run.metrics, "learning_rate")
  return float(rates[0]) if rates.size and np.all(rates == rates[0]) else None


def _plot_learning_rate(ax, runs: list[Run], colors: list) -> Styles | None:
  drawn = _lines(ax, runs, colors, "learning_rate", dict(lw=1.2))
  rates = np.concatenate([series(r.metrics, "learning_rate")[1] for r in runs])
  adaptive = any(r.config.get("learning_rate_schedule") == "ADAPTIVE_KL" for r in runs)
  if drawn and adaptive and rates.min() > 0:  # it moves by factors of 1.5
    ax.set_yscale("log")
  elif drawn:
    # Not the default "1e-4" offset text, which would sit on the panel's title.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda rate, _: f"{rate:.1e}" if rate else "0"))
  ax.set_ylabel("learning rate")
  return {} if drawn else None


def _plot_explained_variance(ax, runs: list[Run], colors: list) -> Styles | None:
  drawn = _lines(ax, runs, colors, "explained_variance", dict(lw=1.2))
  if drawn:
    low = min(series(r.metrics, "explained_variance")[1].min(initial=1.0) for r in runs)
    # Early values can be hugely negative; below -1 the value function is useless anyway.
    ax.set_ylim(max(low, -1.0) - 0.05, 1.05)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    if low < -1.0:
      ax.text(0.99, 0.03, "axis cut at -1", transform=ax.transAxes, ha="right", color="0.5")
  ax.set_ylabel("explained variance")
  return {} if drawn else None


def _mark_nonfinite(axes, runs: list[Run], colors: list) -> bool:
  """A vertical line on every panel where a run's update was skipped for NaN or Inf."""
  drawn = False
  for run, color in zip(runs, colors, strict=True):
    for step in fired(run.metrics, "nonfinite", "env_steps")[0]:
      for ax in axes:
        ax.axvline(step, color=color, label="nonfinite", **_NONFINITE)
      drawn = True
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


def _panels(runs: list[Run]) -> list[tuple[Callable[..., Styles | None], str]]:
  """(draw, title) of each panel; no learning-rate panel when every rate is constant (the
  figure's legend states them)."""
  panels = [
    (_plot_return, "Return"),
    (_plot_kl, "KL: per epoch (k3), and of the whole update"),
    (_plot_clip_fraction, "Clip fraction"),
    (_plot_entropy, "Policy entropy and action std"),
    (_plot_safety, "Safety: termination rate and action saturation (rollout)"),
    (_plot_learning_rate, "Learning rate"),
    (_plot_explained_variance, "Explained variance of the value function"),
  ]
  if all(constant_rate(run) is not None for run in runs if run.metrics):
    panels = [panel for panel in panels if panel[0] is not _plot_learning_rate]
  return panels


def make_figure(run_dirs: Sequence[str | Path]) -> Figure:
  """The runs as one figure of panels sharing the env-steps axis.

  Panels: episode return (eval with a ± std band, train thinner); approx KL per epoch
  (dots shaded by epoch, a line through each iteration's mean) and of the whole update; clip
  fraction (epoch mean and whole update); entropy and action std (twin axis); termination
  rate and action saturation; learning rate (only where one changes: a constant rate is
  given in the legend); explained variance. One color per run. Where a failure label fired,
  a marker on its metric's panel (`MARKS`); a nonfinite update, a dotted line on every panel.

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
  panels = _panels(runs)
  rate_panel = any(draw is _plot_learning_rate for draw, _ in panels)

  labels = []
  for run in runs:
    rate = None if rate_panel else constant_rate(run)
    labels.append(
      run.label
      + ("" if run.metrics else ": no data")
      + ("" if rate is None else f", constant learning rate {rate:.1e}")
    )
  # About 120 characters fit across the figure; a legend entry's line takes about 8.
  legend_cols = max(1, min(len(runs), 120 // (max(map(len, labels)) + 8)))
  legend_rows = math.ceil(len(runs) / legend_cols)
  fig = Figure(figsize=(10, 0.5 + 2.75 * len(panels) + 0.25 * (legend_rows - 1)))
  # A fixed layout: constrained layout would double the drawing time for little gain here.
  height = fig.get_figheight()
  top = 1.0 - (0.75 + 0.25 * legend_rows) / height
  fig.subplots_adjust(left=0.09, right=0.91, top=top, bottom=0.68 / height, hspace=0.22)
  axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
  nonfinite = _mark_nonfinite(axes, runs, palette)
  any_data = False
  for ax, (draw, title) in zip(axes, panels, strict=True):
    ax.set_title(title, loc="left", fontsize="medium")
    ax.grid(True, alpha=0.3)
    styles = draw(ax, runs, palette)
    if styles is None:
      _no_data(ax)
      continue
    any_data = True
    if nonfinite:
      styles["nonfinite (update skipped)"] = _NONFINITE
    _style_legend(ax, styles)
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
