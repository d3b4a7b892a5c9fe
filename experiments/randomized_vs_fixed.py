"""Domain randomization, measured: a policy trained on randomized envs against one trained on the
nominal env, both evaluated on the nominal env and on randomized ones.

python -m experiments.randomized_vs_fixed [PRESET] [--seeds 3] [--episodes 64] [--out DIR]
    [--field value ...]

PRESET (default `brax_reacher_randomized`) names a randomization (`envs.randomization`); the
fixed run is the same config without it. Each condition trains as one panel of `--seeds` seeds.
Every seed's final policy then runs `--episodes` episodes with its deterministic action, once
on the nominal env and once on envs randomized from a key that no training run used; both
conditions meet the same initial states and the same randomized parameters.

OUT/ gets table.md and table.csv (per condition, mean and 95% Student t interval over seeds of:
each seed's mean return on the nominal and on the randomized envs, their difference (paired by
seed, so the seeds' spread cancels), the mean of its worst 10% of randomized episodes, and the
training wall time), returns.json (every episode's return and each randomized episode's
parameters) and both run directories.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from experiments.presets import PRESETS
from experiments.tables import Row, mean_and_interval, write_tables
from experiments.train import add_config_options, parse_args
from ppo_jax import PPOConfig, logger, train
from ppo_jax.monitor import PolicySnapshot
from ppo_jax.programs import over_seeds
from ppo_jax.step import make_env, make_env_and_networks, make_evaluator

EVAL_SEED = 10_000  # the evaluation's initial states and randomized parameters


def worst_mean(returns: np.ndarray, fraction: float = 0.1) -> np.ndarray:
  """[seeds, episodes] -> [seeds]: each seed's mean over its lowest `fraction` of episodes (at
  least one)."""
  count = max(1, int(round(fraction * returns.shape[1])))
  return np.sort(returns, axis=1)[:, :count].mean(axis=1)


def evaluate(cfg: PPOConfig, result, episodes: int, randomization: str) -> dict[str, np.ndarray]:
  """Each seed's final policy (trained with `cfg`) on `episodes` nominal envs and `episodes`
  envs randomized by `randomization`: {"nominal": returns [seeds, episodes], "randomized": ...,
  "params": {leaf: [episodes, ...]}}."""
  cfg = dataclasses.replace(cfg, num_eval_envs=episodes, deterministic_eval=True)
  _, networks = make_env_and_networks(cfg)
  policies = PolicySnapshot(result.params.policy, result.normalizer)
  keys = np.stack([jax.random.PRNGKey(EVAL_SEED)] * cfg.num_seeds)
  out = {}
  for name, env in (
    ("nominal", make_env(dataclasses.replace(cfg, randomization=None))),
    ("randomized", make_env(dataclasses.replace(cfg, randomization=randomization))),
  ):
    evaluate_all = over_seeds(make_evaluator(cfg, env, networks), cfg.num_seeds)
    first, trace = jax.jit(evaluate_all)(policies, keys)
    out[name] = np.asarray(first.returns)
    if name == "randomized":  # every seed met the same parameters: seed 0's
      out["params"] = {k: np.asarray(v[0]) for k, v in trace.env_params.items()}
  return out


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "preset", nargs="?", default="brax_reacher_randomized", help="a preset with a randomization"
  )
  parser.add_argument("--seeds", type=int, default=3, help="seeds per condition (one panel)")
  parser.add_argument("--episodes", type=int, default=64, help="evaluation episodes per env kind")
  parser.add_argument("--out", type=Path, default=None, help="output directory (new)")
  add_config_options(parser, "the preset's value", exclude=("num_seeds",))
  return parser


def main(argv: list[str] | None = None) -> Path:
  parser = build_parser()
  args = parse_args(parser, argv)
  name, seeds, episodes, out = (args.pop(k) for k in ("preset", "seeds", "episodes", "out"))
  if name not in PRESETS:
    parser.error(f"unknown preset {name!r}; one of {sorted(PRESETS)}")
  for option, value in (("--seeds", seeds), ("--episodes", episodes)):
    if value < 1:
      parser.error(f"{option} ({value}) must be >= 1")
  try:
    randomized = dataclasses.replace(PRESETS[name], num_seeds=seeds, **args)
  except (ValueError, TypeError) as error:
    parser.error(str(error))
  if randomized.randomization is None:
    parser.error(f"preset {name!r} (with the options given) has no randomization to compare")
  conditions = {
    "trained randomized": randomized,
    "trained fixed": dataclasses.replace(randomized, randomization=None),
  }
  out = out or logger.new_directory(Path("runs"), "randomized_vs_fixed-")
  if out.exists() and any(out.iterdir()):
    parser.error(f"{out} is not empty; a comparison is never overwritten")
  out.mkdir(parents=True, exist_ok=True)

  rows: dict[str, Row] = {}
  saved = {}
  for condition, cfg in conditions.items():
    print(f"{condition}: {cfg.env}, {seeds} seeds x {cfg.total_env_steps:,d} steps", flush=True)
    started = time.perf_counter()
    result = train(cfg, out / condition.replace(" ", "_"), show_progress=False)
    wall = time.perf_counter() - started
    returns = evaluate(cfg, result, episodes, randomized.randomization)
    rows[condition] = {
      "return on nominal envs": mean_and_interval(returns["nominal"].mean(axis=1)),
      "return on randomized envs": mean_and_interval(returns["randomized"].mean(axis=1)),
      "randomized minus nominal": mean_and_interval(
        returns["randomized"].mean(axis=1) - returns["nominal"].mean(axis=1)
      ),
      "worst 10% on randomized envs": mean_and_interval(worst_mean(returns["randomized"])),
      "training wall s": (wall, float("nan")),
    }
    saved[condition] = {k: v.tolist() for k, v in returns.items() if k != "params"}
    saved["randomized env params"] = {k: v.tolist() for k, v in returns["params"].items()}
  write_tables(rows, out, label="condition")
  (out / "returns.json").write_text(json.dumps(saved))
  print((out / "table.md").read_text())
  print(f"wrote {out / 'table.md'}, {out / 'table.csv'} and {out / 'returns.json'}")
  return out


if __name__ == "__main__":
  main()
