"""One command for a machine with an accelerator: throughput, then a whole run, phase by phase.

python -m experiments.gpu_check [--small] [--timeout SECONDS] [--out DIR]
make gpu-check        (installs wheels carried in .whl/ first, where brax or mujoco are missing)

1. `ppo_jax.benchmark.measure` on brax ant (mjx pipeline, Brax's ant settings: 4096 envs):
   training SPS against rollout-only SPS, and compile time.
2. `python -m experiments.train brax_ant` end to end (50M steps) in a child process, under a
   wall-clock limit; it prints every phase as it starts a long one and the phase table at the
   end, and its run directory keeps timings.json and per-chunk "time/<phase>" records. If the
   limit is reached, the last records and the child's last lines say where the time went.

`--small` runs both at sizes a CPU finishes in a few minutes (64 envs, two chunks), to check
the command itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SMALL = {  # brax_ant's settings scaled to a CPU: 64 envs, 2 chunks of 2 iterations
  "num_envs": 64,
  "batch_size": 32,
  "num_timesteps": 4 * 64 * 16 * 5,
  "num_evals": 3,
  "num_eval_envs": 16,
  "episode_length": 100,
}


def overrides(small: bool) -> list[str]:
  return [arg for k, v in (SMALL if small else {}).items() for arg in (f"--{k}", str(v))]


def benchmark(small: bool) -> None:
  import jax

  from experiments.presets import PRESETS
  from ppo_jax.benchmark import measure

  print(f"JAX {jax.__version__}, devices {jax.devices()}", flush=True)
  cfg = dataclasses.replace(PRESETS["brax_ant"], **(SMALL if small else {}))
  started = time.perf_counter()
  result = measure(cfg, iterations=2, repeats=2)
  print(
    f"throughput, brax ant ({cfg.env_backend}, {cfg.num_envs} envs): train {result.train_sps:,.0f}"
    f" SPS, rollout-only {result.rollout_sps:,.0f} SPS (ratio {result.ratio:.2f}); compile "
    f"{result.train_compile_seconds:.1f} s; {time.perf_counter() - started:.0f} s in all",
    flush=True,
  )


def end_to_end(small: bool, timeout: float, out: Path) -> int:
  """Runs experiments.train brax_ant in a child; its exit status (124 past the limit)."""
  run_dir = out / "brax_ant"
  command = [sys.executable, "-m", "experiments.train", "brax_ant", "--run_dir", str(run_dir)]
  command += overrides(small)
  print("$", " ".join(command), flush=True)
  started = time.perf_counter()
  child = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
  try:
    code = child.wait(timeout)
  except subprocess.TimeoutExpired:
    child.kill()
    child.wait()
    code = 124
    print(f"stopped after {timeout:.0f} s (the limit); where the time went:", flush=True)
    records = (run_dir / "metrics.jsonl").read_text().splitlines()
    if records:
      last = json.loads(records[-1])
      lap = {k: round(v, 2) for k, v in last.items() if k.startswith("time/")}
      print(f"  last record: iteration {last['iteration']}, {last['env_steps']:,d} steps, {lap}")
    else:
      print("  no iteration was logged")
  print(f"end-to-end: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
  timings = run_dir / "timings.json"
  if timings.exists():
    phases = json.loads(timings.read_text())["phases"]
    before = ("setup", "env", "compile", "init")
    after_compile = phases["wall"] - sum(phases.get(name, 0.0) for name in before)
    share = phases.get("train", 0.0) / after_compile if after_compile > 0 else float("nan")
    print(f"training chunks: {share:.0%} of the wall after compilation (timings.json)")
  return code


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--small", action="store_true", help="CPU-sized: checks the command only")
  parser.add_argument("--timeout", type=float, default=300.0, help="limit of the whole run, s")
  parser.add_argument("--out", type=Path, default=Path("runs") / "gpu_check", help="run folder")
  args = parser.parse_args(argv)
  out = args.out / time.strftime("%Y%m%d-%H%M%S")
  out.mkdir(parents=True)
  benchmark(args.small)
  return end_to_end(args.small, args.timeout, out)


if __name__ == "__main__":
  sys.exit(main())
