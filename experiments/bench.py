"""Training vs rollout-only throughput on the CPU (or whatever JAX runs on), by device count.

python -m experiments.bench [--iterations N] [--only NAME ...] [--devices 1 2 4]

With --devices, each workload is measured on the first 1, 2, 4 ... devices. On a CPU the
process asks XLA for that many CPU devices (--xla_force_host_platform_device_count): they share
the same cores, so they show the sharded programs at work, not a speed-up.
"""

from __future__ import annotations

import argparse
import os

# The default experiment is brax inverted_pendulum with Brax's settings.
WORKLOADS = ("brax_inverted_pendulum", "cartpole_balance")


def force_cpu_devices(count: int) -> None:
  """Asks XLA for `count` CPU devices, before JAX starts its backends (no effect on a GPU)."""
  flag = f"--xla_force_host_platform_device_count={count}"
  if count > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, default=2, help="iterations per timed chunk")
  parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run")
  parser.add_argument("--devices", type=int, nargs="*", default=[1], help="device counts to try")
  args = parser.parse_args(argv)
  force_cpu_devices(max(args.devices))
  import jax

  from experiments.presets import PRESETS
  from ppo_jax.benchmark import measure

  print(f"JAX {jax.__version__} on {jax.devices()}; default experiment = brax_inverted_pendulum")
  header = (
    f"{'workload':<24} {'devices':>7} {'envs':>6} {'steps/iter':>10} {'train SPS':>10} "
    f"{'rollout SPS':>11} {'ratio':>6} {'compile s':>9}"
  )
  print(header, "\n" + "-" * len(header), flush=True)
  for name in args.only or WORKLOADS:
    cfg = PRESETS[name]
    for count in args.devices:
      if count > len(jax.devices()):
        print(f"{name:<24} {count:>7} (only {len(jax.devices())} devices here)")
        continue
      result = measure(cfg, iterations=args.iterations, devices=jax.devices()[:count])
      print(
        f"{name:<24} {count:>7} {cfg.num_envs:>6} {cfg.env_steps_per_iteration:>10,d} "
        f"{result.train_sps:>10,.0f} {result.rollout_sps:>11,.0f} {result.ratio:>6.2f} "
        f"{result.train_compile_seconds:>9.1f}",
        flush=True,
      )
  print("train SPS excludes evaluation; compile s is the training chunk's compile time.")


if __name__ == "__main__":
  main()
