"""Train a preset, with any config field overridden from the command line.

python -m experiments.train [PRESET] [--num_timesteps 3000000 --learning_rate 1e-3 ...]
python -m experiments.train [PRESET] --wandb_project NAME [--wandb_entity E --wandb_run_name R]
python -m experiments.train --list

Every line is flushed as it is printed, so that output to a pipe or a log file comes at once. A
phase that waits says so every 30 s ($PPO_JAX_WATCHDOG_SECONDS) and, the second time, prints
every thread's stack to stderr; `kill -USR1 <pid>` (the pid is printed at the start) prints
them on demand, and the run goes on.

The run directory gets plot.png at the end. With MUJOCO_GL set (egl, or osmesa on a CPU) and a
Brax or Playground env, `experiments.evaluate` then renders one episode of the final policy and
of the policies around the largest-KL update (same seed: same initial state) to mp4 videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np

import envs
from experiments import evaluate, imports
from experiments.presets import PRESETS
from ppo_jax import PPOConfig, logger, sharding, train, watchdog
from ppo_jax.plot import PLOT_FILE


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


# The options passed on to `sharding.initialize_distributed` (jax.distributed.initialize's names).
DISTRIBUTED = ("coordinator_address", "num_processes", "process_id", "heartbeat_timeout_seconds")
# The options that make train's wandb argument.
WANDB_OPTIONS = ("wandb_project", "wandb_entity", "wandb_run_name")


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
  parser.add_argument(
    "--compilation_cache",
    metavar="DIR",
    default=None,
    help="folder of JAX's persistent compilation cache, which spares a second run of the same "
    "preset most of its compile time (default: $PPO_JAX_CACHE_DIR, else ~/.cache/ppo_jax/...)",
  )
  parser.add_argument(
    "--no_compilation_cache", action="store_true", help="compile everything anew, cache nothing"
  )
  several = parser.add_argument_group(
    "several processes (hosts)",
    "jax.distributed.initialize's parameters; start one process per host with the same "
    "--run_dir, which must be on a file system every host sees. With none given on a cluster "
    "JAX detects (SLURM, Open MPI), its own detection is used.",
  )
  several.add_argument("--coordinator_address", metavar="HOST:PORT", default=None)
  several.add_argument("--num_processes", type=int, default=None)
  several.add_argument("--process_id", type=int, default=None)
  several.add_argument(
    "--heartbeat_timeout_seconds",
    type=int,
    default=30,
    help="a process silent this long makes the others stop with an error",
  )
  imports.add_option(parser)
  wandb = parser.add_argument_group(
    "Weights & Biases",
    'log the run to W&B as well (needs pip install -e ".[wandb]"); the W&B run\'s files go into '
    "the run directory, and --resume goes on in the same W&B run",
  )
  wandb.add_argument("--wandb_project", metavar="NAME", default=None, help="W&B is off without it")
  wandb.add_argument("--wandb_entity", metavar="ENTITY", default=None, help="W&B user or team")
  wandb.add_argument("--wandb_run_name", metavar="NAME", default=None, help="the W&B run's name")
  add_config_options(parser, "preset's value if omitted")
  return parser


def add_config_options(
  parser: argparse.ArgumentParser, omitted: str, exclude: tuple[str, ...] = ()
) -> None:
  """A --<field> option per PPOConfig field but those in `exclude` (set by the command itself),
  absent from the parsed arguments unless given."""
  for field in dataclasses.fields(PPOConfig):
    if field.name in exclude:
      continue
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


def wandb_from_args(parser: argparse.ArgumentParser, args: dict) -> dict | None:
  """train's wandb argument asked for by `parse_args`'s result (None without --wandb_project);
  parser.error if the other --wandb_ options come without it or wandb is not installed."""
  project, entity, name = (args[option] for option in WANDB_OPTIONS)
  if project is None:
    if entity is not None or name is not None:
      parser.error("--wandb_entity and --wandb_run_name need --wandb_project")
    return None
  settings = dict(project=project, entity=entity, name=name)
  try:
    return logger.check_wandb(settings)
  except ImportError as error:
    parser.error(str(error))


def config_from_args(parser: argparse.ArgumentParser, args: dict) -> tuple[PPOConfig, Path, bool]:
  """(config, run directory, resume) asked for by `parse_args`'s result; parser.error if bad.

  A new run's directory, runs/<preset>-<date>-<time>, is created (empty) once every check has
  passed; an exact --run_dir is left to `train`, which refuses one that is not empty.
  """
  args = dict(args)
  preset, runs, run_dir, resume = (args.pop(k) for k in ("preset", "runs", "run_dir", "resume"))
  skipped = ("list", "compilation_cache", "no_compilation_cache", "imports")
  for name in (*skipped, *DISTRIBUTED, *WANDB_OPTIONS):
    args.pop(name, None)
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
  imports.import_modules(parser, args["imports"])
  if args["list"]:
    for name, cfg in PRESETS.items():
      print(f"{name:<32} {cfg.env:<32} {cfg.num_timesteps:>12,d} steps")
    return None
  several = sharding.initialize_distributed(**{name: args[name] for name in DISTRIBUTED})
  if several and args["run_dir"] is None and args["resume"] is None:
    parser.error("several processes need the same --run_dir (or --resume RUN_DIR) in each")
  wandb = wandb_from_args(parser, args)  # before a run directory is made
  cfg, run_dir, resume = config_from_args(parser, args)
  primary = jax.process_index() == 0
  stacks = watchdog.stacks_on_signal()  # SIGUSR1, where the platform has it
  if primary:
    print(
      f"run directory: {run_dir}\n{cfg.env}: {cfg.total_env_steps:,d} env steps in "
      f"{cfg.num_iterations} iterations of {cfg.env_steps_per_iteration:,d} on "
      f"{jax.device_count()} devices of {jax.process_count()} processes",
      flush=True,
    )
    if stacks is not None:
      print(f"every thread's stack, at any time: kill -USR1 {os.getpid()}", flush=True)
  cache = False if args["no_compilation_cache"] else args["compilation_cache"] or True
  # Writes plot.png too.
  result = train(cfg, run_dir, resume=resume, compilation_cache=cache, wandb=wandb)
  if not primary:
    return run_dir
  if evaluate.rendering_unavailable(cfg.env, gl_error=None) is None:  # MUJOCO_GL is set
    print("videos of the final policy and of those around the largest-KL update:", flush=True)
    deterministic = ["--deterministic"] if cfg.deterministic_eval else []
    for folder in evaluate.policy_folders(run_dir):
      evaluate.main([str(folder), "--episodes", "1", *deterministic])
  # The last evaluation (averaged over the seeds of a panel).
  final = float(np.mean(result.evals["eval/episode_return"][..., -1]))
  print(
    f"done: eval return {final:.1f} after {cfg.total_env_steps:,d} steps; "
    f"wall {result.timings['wall']:.1f} s: compile {result.compile_seconds:.1f} s, "
    f"training {result.train_seconds:.1f} s (timings.json has every phase)\n"
    f"run directory: {run_dir} (plot: {PLOT_FILE}, policy: policy/)",
    flush=True,
  )
  return run_dir


if __name__ == "__main__":
  main()
