"""PPO against TRPO at equal env steps, one seed panel each: same env, diagnostics and seeds.

python -m experiments.compare --env brax/inverted_pendulum --algorithms ppo trpo --seeds 8 \
    [--steps N] [--same_settings] [--set field=value ...] [--out DIR]
python -m experiments.compare --env cartpole_balance --seeds 3 --set learning_rate=1e-2 \
    --variants plain target_kl:target_kl=0.02 backstop:max_update_kl=0.02

`--env` is an env name or a preset name. Each algorithm starts from its own preset for that
env (the one whose `algorithm` it is, e.g. `brax_inverted_pendulum_trpo`): TRPO makes one
natural-gradient step per iteration, so its settings collect many more, smaller batches than
PPO's. With `--same_settings` every algorithm starts from the env's first preset instead and
differs only in `algorithm` (TRPO drops PPO's `target_kl` and `max_update_kl`, and an
"ADAPTIVE_KL" schedule becomes None, a constant rate: the learning rate then moves only TRPO's
value network). An algorithm without a preset of its own gets the same settings. `--steps`
sets every algorithm's `num_timesteps`, so they compare at equal env steps (each rounds up to
whole chunks of its own iterations; the table reports the steps taken), and `--set`
overrides apply to all. Each algorithm trains `--seeds` seeds in one vmapped program
(`num_seeds`), in OUT/<algorithm>/. `--variants NAME[:FIELD=VALUE,...] ...` compares runs of
the first algorithm instead, each with its own overrides on top of the others.

OUT gets table.md and table.csv: per algorithm, the mean and a 95% confidence interval
(Student t over seeds) of the final and area-under-curve evaluation return, the policy updates
made and the samples each one used, the update KL (mean and max), clip fraction, entropy,
final action std, termination rate, action saturation, the failure-label counts, the env
steps taken and the panel's SPS (one figure per panel, no interval); and comparison.png:
evaluation return, update KL, clip fraction and action std against env steps, mean and
interval band per algorithm.
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
  # Parameter updates of the policy: PPO's applied minibatch steps, TRPO's accepted steps.
  "policy_updates": lambda e, m: np.sum(
    m["trpo/accepted"] if "trpo/accepted" in m else m["minibatch_updates_applied"], axis=1
  ),
  "update_kl_mean": lambda e, m: np.nanmean(m["update_kl"], axis=1),
  "update_kl_max": lambda e, m: np.nanmax(m["update_kl"], axis=1),
  "clip_fraction": lambda e, m: np.nanmean(m["update_clip_fraction"], axis=1),
  "entropy": lambda e, m: np.nanmean(m["entropy"], axis=1),
  "final_action_std": lambda e, m: m["update_action_std"][:, -1],
  # Iterations whose update the backstop pulled back or rejected (NaN without a backstop).
  "backstop_pulled_back": lambda e, m: (
    np.sum(m["backstop_fraction"] < 1, axis=1)
    if "backstop_fraction" in m
    else np.full(len(e["env_steps"]), np.nan)
  ),
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


def base_config(env: str) -> PPOConfig:
  """The preset named `env`, else the first preset for that env, else PPOConfig(env=env)."""
  if env in PRESETS:
    return PRESETS[env]
  return next((c for c in PRESETS.values() if c.env == env), None) or PPOConfig(env=env)


def for_algorithm(
  base: PPOConfig, algorithm: str, seeds: int, same_settings: bool, overrides: dict
) -> PPOConfig:
  """`algorithm`'s config: its own preset for base.env (unless `same_settings`), else `base`
  with only the algorithm changed; then `overrides` and the panel's seeds."""
  own = next((c for c in PRESETS.values() if c.env == base.env and c.algorithm == algorithm), None)
  if own is not None and not same_settings:
    return dataclasses.replace(own, num_seeds=seeds, **overrides)
  changes = {"algorithm": algorithm, "num_seeds": seeds}
  if algorithm == "trpo":
    changes |= {"target_kl": None, "max_update_kl": None}
    if base.learning_rate_schedule == "ADAPTIVE_KL":
      changes["learning_rate_schedule"] = None
  return dataclasses.replace(base, **changes, **overrides)


def summarize(result: TrainResult) -> dict[str, tuple[float, float]]:
  """Column -> (mean, interval half-width) of one panel; sps has no interval."""
  evals, metrics = per_seed(result)
  cfg, none = result.config, float("nan")
  row = {name: mean_and_interval(column(evals, metrics)) for name, column in COLUMNS.items()}
  trpo = cfg.algorithm == "trpo"  # a TRPO step uses the whole batch, a PPO one a minibatch
  samples = cfg.num_segments * cfg.unroll_length if trpo else cfg.minibatch_size
  row["samples_per_update"] = (samples, none)
  row["env_steps"] = (cfg.total_env_steps, none)
  row["sps"] = (cfg.total_env_steps * cfg.num_seeds / result.train_seconds, none)
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
  parser.add_argument(
    "--steps", type=int, default=None, help="every algorithm's num_timesteps (presets' if not)"
  )
  parser.add_argument(
    "--same_settings",
    action="store_true",
    help="every algorithm from the env's first preset, not from its own",
  )
  parser.add_argument(
    "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other config overrides"
  )
  parser.add_argument(
    "--variants",
    nargs="+",
    default=None,
    metavar="NAME[:FIELD=VALUE,...]",
    help="compare runs of the first algorithm with these overrides instead of algorithms",
  )
  parser.add_argument("--out", type=Path, default=None, help="output folder (must not exist)")
  return parser


def parse_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict:
  overrides = {}
  for item in items:
    field, sep, value = item.partition("=")
    if not sep:
      parser.error(f"--set and --variants take FIELD=VALUE, got {item!r}")
    overrides[field] = parse_value(value)
  return overrides


def build_configs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
  """Run name (an algorithm or a variant) -> its config; parser.error on a bad setting."""
  if args.seeds < 1:
    parser.error(f"--seeds ({args.seeds}) must be >= 1")
  overrides = parse_overrides(parser, args.set)
  if args.steps is not None:
    overrides = {"num_timesteps": args.steps, **overrides}
  try:  # every config is checked before anything trains
    base = base_config(args.env)
    configs = {
      a: for_algorithm(base, a, args.seeds, args.same_settings, overrides) for a in args.algorithms
    }
    if not args.variants:
      return configs
    first = configs[args.algorithms[0]]
    variants = {}
    for variant in args.variants:
      name, _, changes = variant.partition(":")
      changes = parse_overrides(parser, changes.split(",") if changes else [])
      variants[name] = dataclasses.replace(first, **changes)
    return variants
  except (ValueError, TypeError) as error:
    parser.error(str(error))


def main(argv: list[str] | None = None) -> Path:
  parser = build_parser()
  args = parser.parse_args(argv)
  configs = build_configs(parser, args)
  out = (
    args.out
    or Path("runs") / f"compare-{args.env.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
  )
  if out.exists():
    parser.error(f"{out} exists; a comparison is never overwritten")
  out.mkdir(parents=True)

  results = {}
  for name, cfg in configs.items():
    print(f"{name}: {cfg.env}, {args.seeds} seeds x {cfg.total_env_steps:,d} steps", flush=True)
    results[name] = train(cfg, out / name)
  rows = {name: summarize(result) for name, result in results.items()}
  write_tables(rows, out, label="variant" if args.variants else "algorithm")
  figure = plot(results, out)
  print((out / "table.md").read_text())
  print(f"wrote {out / 'table.md'}, {out / 'table.csv'} and {figure}")
  return out


if __name__ == "__main__":
  main()
