"""Throughput of one preset, with our trainer or Brax's, written as JSON: a stage of
`experiments.gpu_check`, which runs it in a process of its own.

python -m experiments.throughput PRESET [--trainer ours|brax] [--iterations N] [--json PATH]
    [--compilation_cache DIR] [--field value ...]

ours: `ppo_jax.benchmark.measure`, N training iterations (2 by default) in one compiled chunk,
the best of two calls: training SPS, rollout-only SPS and the chunk's compile seconds (a
training run's chunk of as many iterations, loaded from its compilation cache, compiles in no
time).
brax: Brax's own `ppo.train` with the same settings (`experiments.versus_brax`) for the config's
num_timesteps and num_evals: the SPS Brax reports after each evaluation ("training/sps") and
its whole wall, compilation included.

A config this machine cannot run (a Playground robot without MuJoCo Menagerie on disk, "warp"
physics without a GPU and mujoco_warp) gives {"skipped": the reason}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import traceback
from pathlib import Path


def ours(cfg, iterations: int) -> dict:
  from ppo_jax.benchmark import measure

  result = measure(cfg, iterations=iterations, repeats=2)
  return {
    "train_sps": result.train_sps,
    "rollout_sps": result.rollout_sps,
    "ratio": result.ratio,
    "train_compile_seconds": result.train_compile_seconds,
  }


def brax(cfg, iterations: int) -> dict:
  from brax.training.agents.ppo import train as brax_train

  import envs
  from experiments.versus_brax import brax_arguments, brax_environment, replicated_put

  env = envs.make(cfg.env, episode_length=cfg.episode_length, backend=cfg.env_backend)
  environment, wrap_env_fn = brax_environment(env)
  sps, result = [], {}
  started = time.perf_counter()
  try:
    with replicated_put():
      brax_train.train(
        environment=environment,
        wrap_env_fn=wrap_env_fn,
        seed=cfg.seed,
        progress_fn=lambda step, metrics: sps.append(float(metrics.get("training/sps", 0.0))),
        **brax_arguments(cfg),
      )
  except AssertionError as error:
    # Brax's last check, the replicas' fingerprints equal, fails on a state with NaN (its
    # trainer skips no update); the SPS it reported before still stand.
    if traceback.extract_tb(error.__traceback__)[-1].name != "assert_is_replicated":
      raise
    result["brax_error"] = "Brax's final replication check failed: its training state has NaN"
  seconds = time.perf_counter() - started
  return result | {"train_sps": [s for s in sps if s > 0], "wall_seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
  from experiments.presets import PRESETS
  from experiments.train import add_config_options, parse_args

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("preset", choices=sorted(PRESETS), metavar="PRESET")
  parser.add_argument("--trainer", choices=("ours", "brax"), default="ours")
  parser.add_argument("--iterations", type=int, default=2, help="iterations a timed call")
  parser.add_argument("--json", type=Path, default=None, help="where the result goes")
  parser.add_argument("--compilation_cache", type=Path, default=None, help="JAX's, if any")
  add_config_options(parser, "preset's value if omitted")
  args = parse_args(parser, argv)
  preset, trainer, path = args.pop("preset"), args.pop("trainer"), args.pop("json")
  iterations, cache = args.pop("iterations"), args.pop("compilation_cache")
  import jax

  import envs
  from ppo_jax.programs import use_compilation_cache

  use_compilation_cache(cache or False)

  cfg = dataclasses.replace(PRESETS[preset], **args)
  result = {"preset": preset, "trainer": trainer, "env": cfg.env, "num_envs": cfg.num_envs}
  result["env_backend"] = cfg.env_backend
  source, _, name = cfg.env.partition("/")
  try:
    if source == "playground":
      envs.check_playground_assets(name)  # Menagerie on disk, or a ValueError that says where
      result["env_backend"] = envs.playground_backend(cfg.env_backend)
  except ValueError as error:  # this machine cannot run it
    result["skipped"] = str(error)
  else:
    result["device"] = jax.devices()[0].device_kind
    result |= (ours if trainer == "ours" else brax)(cfg, iterations)
  print(json.dumps(result), flush=True)
  if path is not None:
    path.write_text(json.dumps(result, indent=2) + "\n")
  return result


if __name__ == "__main__":
  main()
