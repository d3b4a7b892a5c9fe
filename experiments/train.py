"""Train a preset, with any config field overridden from the command line.

python -m experiments.train [PRESET] [--num_timesteps 3000000 --learning_rate 1e-3 ...]
python -m experiments.train --list
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

import envs
from experiments.plot import plot_runs
from experiments.presets import PRESETS
from ppo_jax import PPOConfig, logger, train


def parse_value(text: str):
  """CLI text -> Python value: JSON where it parses ("3e-4", "true", "null", "[32, 32]"),
  "none" for None, "32,32" for a tuple, else the string itself."""
  if text.lower() == "none":
    return None
  if "," in text and not text.startswith("["):
    return tuple(int(v) for v in text.split(","))
  try:
    value = json.loads(text)
  except json.JSONDecodeError:
    return text
  return tuple(value) if isinstance(value, list) else value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description="Train PPO on a preset; every PPOConfig field can be overridden.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    allow_abbrev=False,  # "--learn 1e-3" would silently set learning_rate
  )
  parser.add_argument("preset", nargs="?", default="default", help="preset name (see --list)")
  parser.add_argument("--list", action="store_true", help="list the presets and exit")
  parser.add_argument("--runs", default="runs", help="folder that holds the run directories")
  parser.add_argument("--run_dir", default=None, help="exact run directory (must not exist)")
  parser.add_argument(
    "--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR"
  )
  add_config_options(parser, "preset's value if omitted")
  return parser


def add_config_options(parser: argparse.ArgumentParser, omitted: str) -> None:
  """A --<field> option per PPOConfig field, absent from the parsed arguments unless given."""
  for field in dataclasses.fields(PPOConfig):
    parser.add_argument(
      f"--{field.name}",
      type=parse_value,
      default=argparse.SUPPRESS,
      help=f"{field.metadata['help']} [{field.type}; {omitted}]",
    )


def did_you_mean(word: str, candidates: list[str]) -> str:
  """ "; did you mean <closest>?" when a candidate is close to `word`, else ""."""
  match = envs.did_you_mean(word, candidates)
  return f"; did you mean {match}?" if match else ""


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
  """Parsed arguments as a dict; an unknown option fails naming the closest known one."""
  args, unknown = parser.parse_known_args(argv)
  for arg in unknown:
    if arg.startswith("-"):
      name = arg.split("=", 1)[0]
      known = [s for action in parser._actions for s in action.option_strings]
      parser.error(f"unknown option {name}{did_you_mean(name, known)}")
  if unknown:
    parser.error(f"unexpected argument(s): {' '.join(unknown)}")
  return vars(args)


def config_from_args(parser: argparse.ArgumentParser, args: dict) -> tuple[PPOConfig, Path, bool]:
  """(config, run directory, resume) asked for by `parse_args`'s result; parser.error if bad.

  A new run's directory, runs/<preset>-<date>-<time>, is created (empty) once every check has
  passed; an exact --run_dir is left to `train`, which refuses one that is not empty.
  """
  args = dict(args)
  preset, runs, run_dir, resume = (args.pop(k) for k in ("preset", "runs", "run_dir", "resume"))
  args.pop("list", None)
  if resume is not None:
    if args:
      parser.error(f"--resume takes no config overrides (got {', '.join(args)})")
    config_path = Path(resume) / "config.json"
    if not config_path.exists():
      parser.error(f"cannot resume {resume}: no config.json there")
    cfg, run_dir = PPOConfig(**json.loads(config_path.read_text())), Path(resume)
  else:
    if preset not in PRESETS:
      parser.error(
        f"unknown preset {preset!r}{did_you_mean(preset, list(PRESETS)) or ';'} "
        f"available: {', '.join(PRESETS)}"
      )
    try:
      cfg = dataclasses.replace(PRESETS[preset], **args)
    except (ValueError, TypeError) as error:  # the message names the field and the rule
      parser.error(str(error))
  try:
    envs.check_name(cfg.env)  # before a run directory is made for an env that does not exist
  except ValueError as error:
    parser.error(str(error))
  if resume is None:
    run_dir = Path(run_dir) if run_dir else logger.new_directory(runs, f"{preset}-")
  return cfg, run_dir, resume is not None


def main(argv: list[str] | None = None) -> Path | None:
  parser = build_parser()
  args = parse_args(parser, argv)
  if args["list"]:
    for name, cfg in PRESETS.items():
      print(f"{name:<32} {cfg.env:<32} {cfg.num_timesteps:>12,d} steps")
    return None
  cfg, run_dir, resume = config_from_args(parser, args)
  print(
    f"run directory: {run_dir}\n{cfg.env}: {cfg.total_env_steps:,d} env steps in "
    f"{cfg.num_iterations} iterations of {cfg.env_steps_per_iteration:,d}",
    flush=True,
  )
  result = train(cfg, run_dir, resume=resume)
  plot = plot_runs([run_dir], run_dir / "plot.png")
  # The last evaluation (averaged over the seeds of a panel).
  final = float(np.mean(result.evals["eval/episode_return"][..., -1]))
  print(
    f"done: eval return {final:.1f} after {cfg.total_env_steps:,d} steps; "
    f"compile {result.compile_seconds:.1f} s, training {result.train_seconds:.1f} s\n"
    f"run directory: {run_dir} (plot: {plot.name}, policy: policy/)"
  )
  return run_dir


if __name__ == "__main__":
  main()
