"""PPO against TRPO on one seed panel each: same env, rollouts, diagnostics and seeds.

python -m experiments.compare --env brax/inverted_pendulum --algorithms ppo trpo --seeds 8 \
    [--steps N] [--set field=value ...] [--out DIR]

`--env` is an env name or a preset name; the run starts from the preset for that env (or
PPOConfig's defaults), with `--steps` and any `--set` overrides, and differs between the
algorithms only in `algorithm` (TRPO drops PPO's `target_kl`, and an "ADAPTIVE_KL" schedule
becomes None, a constant rate: the learning rate then moves only TRPO's value network). Each algorithm
trains `--seeds` seeds in one vmapped program (`num_seeds`), in OUT/<algorithm>/.

OUT gets table.md and table.csv: per algorithm, the mean and a 95% confidence interval
(Student t over seeds) of the final and area-under-curve evaluation return, the update KL (mean
and max), clip fraction, entropy, final action std, termination rate, action saturation, the
failure-label counts, and the panel's SPS (one figure per panel, no interval); and
comparison.png: evaluation return, update KL, clip fraction and action std against env steps,
mean and interval band per algorithm.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from experiments.presets import PRESETS
from experiments.tables import mean_and_interval, plot_band, write_tables
from experiments.train import parse_value
from ppo_jax import PPOConfig, TrainResult, train
from ppo_jax.config import ALGORITHMS
from ppo_jax.monitor import LABELS

# Column -> its per-seed values [seeds], from (evals, metrics) arrays [seeds, time].
COLUMNS = {
  "final_return": lambda e, m: e["eval/episode_return"][:, -1],
  "auc_return": lambda e, m: _area_under_curve(e["env_steps"][0], e["eval/episode_return"]),
  "update_kl_mean": lambda e, m: np.nanmean(m["update_kl"], axis=1),
  "update_kl_max": lambda e, m: np.nanmax(m["update_kl"], axis=1),
  "clip_fraction": lambda e, m: np.nanmean(m["update_clip_fraction"], axis=1),
  "entropy": lambda e, m: np.nanmean(m["entropy"], axis=1),
  "final_action_std": lambda e, m: m["update_action_std"][:, -1],
  "termination_rate": lambda e, m: np.nanmean(m["termination_rate"], axis=1),
  "action_saturation": lambda e, m: np.nanmean(m["action_saturation"], axis=1),
  **{
    f"label_{label}": (lambda e, m, label=label: np.nansum(m[f"label/{label}"], axis=1))
    for label in LABELS
  },
}


def per_seed(result: TrainResult) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(evals, metrics) with a leading seed axis, also for a single seed."""
  if result.config.num_seeds > 1:
    return result.evals, result.metrics
  return (
    {k: v[None] for k, v in result.evals.items()},
    {k: v[None] for k, v in result.metrics.items()},
  )


def _area_under_curve(steps: np.ndarray, returns: np.ndarray) -> np.ndarray:
  """Per seed: the evaluation return averaged over training (trapezoids over env steps)."""
  if steps[-1] == steps[0]:
    return returns[:, -1]
  return np.trapezoid(returns, steps, axis=1) / (steps[-1] - steps[0])


def base_config(env: str, steps: int | None, overrides: dict) -> PPOConfig:
  """The preset named `env`, else the first preset for that env, else PPOConfig(env=env)."""
  if env in PRESETS:
    cfg = PRESETS[env]
  else:
    cfg = next((c for c in PRESETS.values() if c.env == env), None) or PPOConfig(env=env)
  if steps is not None:
    overrides = {"num_timesteps": steps, **overrides}
  return dataclasses.replace(cfg, **overrides)


def for_algorithm(cfg: PPOConfig, algorithm: str, seeds: int) -> PPOConfig:
  changes = {"algorithm": algorithm, "num_seeds": seeds}
  if algorithm == "trpo":
    changes["target_kl"] = None
    if cfg.learning_rate_schedule == "ADAPTIVE_KL":
      changes["learning_rate_schedule"] = None
  return dataclasses.replace(cfg, **changes)


def summarize(result: TrainResult) -> dict[str, tuple[float, float]]:
  """Column -> (mean, interval half-width) of one panel; sps has no interval."""
  evals, metrics = per_seed(result)
  row = {name: mean_and_interval(column(evals, metrics)) for name, column in COLUMNS.items()}
  steps = result.config.total_env_steps * result.config.num_seeds
  row["sps"] = (steps / result.train_seconds, float("nan"))
  return row


def plot(results: dict[str, TrainResult], out: Path) -> Path:
  from matplotlib.figure import Figure

  panels = (
    ("eval/episode_return", "evaluation return", "evals"),
    ("update_kl", "update KL (k3)", "metrics"),
    ("update_clip_fraction", "clip fraction", "metrics"),
    ("update_action_std", "action std", "metrics"),
  )
  fig = Figure(figsize=(12, 8), layout="constrained")
  for ax, (key, title, source) in zip(fig.subplots(2, 2).ravel(), panels, strict=True):
    for algorithm, result in results.items():
      data = dict(zip(("evals", "metrics"), per_seed(result), strict=True))[source]
      steps, values = data["env_steps"][0], data[key]
      plot_band(ax, steps, values, algorithm)
    ax.set_title(title)
    ax.set_xlabel("env steps")
    if key == "update_kl":
      ax.set_yscale("log")
    ax.legend()
  path = out / "comparison.png"
  fig.savefig(path, dpi=100)
  return path


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description="Train PPO and TRPO seed panels on one env; write a table and a figure.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument("--env", default="brax/inverted_pendulum", help="env or preset name")
  parser.add_argument(
    "--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS, help="to compare"
  )
  parser.add_argument("--seeds", type=int, default=8, help="seeds per algorithm")
  parser.add_argument("--steps", type=int, default=None, help="num_timesteps (preset's if not)")
  parser.add_argument(
    "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other config overrides"
  )
  parser.add_argument("--out", type=Path, default=None, help="output folder (must not exist)")
  return parser


def main(argv: list[str] | None = None) -> Path:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f"--seeds ({args.seeds}) must be >= 1")
  overrides = {}
  for item in args.set:
    field, sep, value = item.partition("=")
    if not sep:
      parser.error(f"--set takes FIELD=VALUE, got {item!r}")
    overrides[field] = parse_value(value)
  try:  # every config is checked before anything trains
    base = base_config(args.env, args.steps, overrides)
    configs = {a: for_algorithm(base, a, args.seeds) for a in args.algorithms}
  except (ValueError, TypeError) as error:
    parser.error(str(error))
  out = (
    args.out
    or Path("runs") / f"compare-{args.env.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
  )
  if out.exists():
    parser.error(f"{out} exists; a comparison is never overwritten")
  out.mkdir(parents=True)

  results = {}
  for algorithm, cfg in configs.items():
    print(
      f"{algorithm}: {cfg.env}, {args.seeds} seeds x {cfg.total_env_steps:,d} steps", flush=True
    )
    results[algorithm] = train(cfg, out / algorithm)
  rows = {algorithm: summarize(result) for algorithm, result in results.items()}
  write_tables(rows, out)
  figure = plot(results, out)
  print((out / "table.md").read_text())
  print(f"wrote {out / 'table.md'}, {out / 'table.csv'} and {figure}")
  return out


if __name__ == "__main__":
  main()
