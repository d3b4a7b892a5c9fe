"""Training vs rollout-only throughput on the CPU (or whatever JAX runs on).

python -m experiments.bench [--iterations N] [--only NAME ...]
"""

from __future__ import annotations

import argparse

import jax

from experiments.presets import PRESETS
from ppo_jax.benchmark import measure

# The default experiment is brax inverted_pendulum with Brax's settings.
WORKLOADS = ("brax_inverted_pendulum", "cartpole_balance")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, default=2, help="iterations per timed chunk")
  parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run")
  args = parser.parse_args()
  print(f"JAX {jax.__version__} on {jax.devices()}; default experiment = brax_inverted_pendulum")
  header = (
    f"{'workload':<24} {'envs':>6} {'steps/iter':>10} {'train SPS':>10} {'rollout SPS':>11} "
    f"{'ratio':>6} {'compile s':>9}"
  )
  print(header, "\n" + "-" * len(header), flush=True)
  for name in args.only or WORKLOADS:
    cfg = PRESETS[name]
    result = measure(cfg, iterations=args.iterations)
    print(
      f"{name:<24} {cfg.num_envs:>6} {cfg.env_steps_per_iteration:>10,d} "
      f"{result.train_sps:>10,.0f} {result.rollout_sps:>11,.0f} {result.ratio:>6.2f} "
      f"{result.train_compile_seconds:>9.1f}",
      flush=True,
    )
  print("train SPS excludes evaluation; compile s is the training chunk's compile time.")


if __name__ == "__main__":
  main()
