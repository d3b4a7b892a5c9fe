"""Peak host memory and throughput of one training iteration against num_envs (a benchmark).

python -m experiments.memory [--quick] [--num_envs 256 1024 ...] [--backend generalized]

Each num_envs runs in a fresh subprocess, so its peak RSS (VmHWM) is its own: the brax_ant
preset with num_envs overridden and batch_size scaled with it (the preset's 16 unrolls of
5 steps per env per iteration), compiled as one chunk of one iteration and run once. A line
RSS = a + b * num_envs is fitted by least squares and solved for the memory limit.

The train state is not donated to the step here (train() donates it), so a real run's peak
can be lower by up to one copy of the state. Brax's "generalized" pipeline is the default:
on a CPU it compiles in about half the time of "mjx" (40 s against 76 s at 64 envs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Sequence

from experiments.presets import PRESETS
from ppo_jax import PPOConfig

GIB = 2**30
DEFAULT_NUM_ENVS = (256, 1024, 4096, 16384)
QUICK_NUM_ENVS = (64, 256)


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One subprocess: peak resident memory after compiling and after running, and speed."""

  num_envs: int
  env_steps: int
  compile_seconds: float
  run_seconds: float
  peak_compile_bytes: int
  peak_bytes: int

  @property
  def steps_per_second(self) -> float:
    return self.env_steps / self.run_seconds


def ant_config(num_envs: int, backend: str = "generalized") -> PPOConfig:
  """brax_ant with `num_envs` envs, its 16 unrolls per env kept, one iteration per chunk."""
  preset = PRESETS["brax_ant"]
  unrolls = preset.unrolls_per_iteration
  if (num_envs * unrolls) % preset.num_minibatches == 0:
    batch_size, num_minibatches = (
      num_envs * unrolls // preset.num_minibatches,
      preset.num_minibatches,
    )
  else:  # e.g. an odd num_envs: fewer, larger minibatches, the same data
    batch_size, num_minibatches = num_envs, unrolls
  cfg = dataclasses.replace(
    preset,
    env_backend=backend,
    num_envs=num_envs,
    batch_size=batch_size,
    num_minibatches=num_minibatches,
    num_evals=2,
  )
  return dataclasses.replace(cfg, num_timesteps=cfg.env_steps_per_iteration)


def peak_rss_bytes() -> int:
  """High-water mark of this process's resident memory (VmHWM), in bytes."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


def measure(num_envs: int, backend: str) -> Measurement:
  """Compiles and runs one training iteration in this process."""
  import jax

  from ppo_jax.programs import compiler_options
  from ppo_jax.step import init_state, make_env_and_networks, make_train_chunk

  cfg = ant_config(num_envs, backend)
  env, networks = make_env_and_networks(cfg)
  state = init_state(cfg, env, networks)
  started = time.perf_counter()
  chunk = jax.jit(make_train_chunk(cfg, env, networks)).lower(state)
  chunk = chunk.compile(compiler_options("chunk"))
  compile_seconds = time.perf_counter() - started
  peak_compile = peak_rss_bytes()
  started = time.perf_counter()
  jax.block_until_ready(chunk(state))
  run_seconds = time.perf_counter() - started
  return Measurement(
    num_envs=num_envs,
    env_steps=cfg.iterations_per_chunk * cfg.env_steps_per_iteration,
    compile_seconds=compile_seconds,
    run_seconds=run_seconds,
    peak_compile_bytes=peak_compile,
    peak_bytes=peak_rss_bytes(),
  )


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
  """Least-squares (a, b) of y = a + b * x; needs two distinct xs."""
  n = len(xs)
  mean_x, mean_y = sum(xs) / n, sum(ys) / n
  var_x = sum((x - mean_x) ** 2 for x in xs)
  if n < 2 or var_x == 0:
    raise ValueError(f"a line needs at least two distinct num_envs, got {list(xs)}")
  b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x
  return mean_y - b * mean_x, b


def max_num_envs(a: float, b: float, limit_bytes: float) -> int | None:
  """Largest num_envs with a + b * num_envs <= limit_bytes; None if memory does not grow."""
  if b <= 0:
    return None
  return max(0, int((limit_bytes - a) // b))


HEADER = (
  f"{'num_envs':>8} {'env steps':>10} {'compile s':>9} {'run s':>7} {'steps/s':>9} "
  f"{'RSS compiled GiB':>16} {'peak RSS GiB':>12}"
)


def format_row(m: Measurement) -> str:
  return (
    f"{m.num_envs:>8} {m.env_steps:>10,d} {m.compile_seconds:>9.1f} {m.run_seconds:>7.1f} "
    f"{m.steps_per_second:>9,.0f} {m.peak_compile_bytes / GIB:>16.2f} {m.peak_bytes / GIB:>12.2f}"
  )


def format_table(rows: Sequence[Measurement]) -> str:
  return "\n".join([HEADER, "-" * len(HEADER), *map(format_row, rows)])


def summarize(rows: Sequence[Measurement], limit_gib: float) -> str:
  """The fit of peak RSS against num_envs and the largest num_envs under `limit_gib`."""
  a, b = fit_line([m.num_envs for m in rows], [m.peak_bytes for m in rows])
  largest = max_num_envs(a, b, limit_gib * GIB)
  measured = max(m.num_envs for m in rows)
  fit = f"fit: peak RSS = {a / GIB:.2f} GiB + {b / 2**20:.3f} MiB * num_envs"
  if largest is None:
    return f"{fit}\npeak RSS does not grow with num_envs here; no limit found"
  how = "extrapolated" if largest > measured else "interpolated"
  return f"{fit}\nlargest num_envs within {limit_gib:g} GiB: {largest:,d} ({how}, linear fit)"


def run_child(num_envs: int, backend: str) -> Measurement | str:
  """Measures `num_envs` in a fresh Python process; the error's last line if it fails."""
  command = [sys.executable, "-m", "experiments.memory", "--child", str(num_envs)]
  done = subprocess.run(command + ["--backend", backend], capture_output=True, text=True)
  if done.returncode != 0:  # -9: killed, most likely out of memory
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return f"exit code {done.returncode} {last}".strip()
  return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  parser.add_argument("--num_envs", type=int, nargs="+", default=list(DEFAULT_NUM_ENVS))
  parser.add_argument("--quick", action="store_true", help=f"num_envs {QUICK_NUM_ENVS} only")
  parser.add_argument("--backend", default="generalized", help="Brax physics pipeline")
  parser.add_argument("--limit_gib", type=float, default=24.0, help="memory to fit into")
  parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    print(json.dumps(dataclasses.asdict(measure(args.child, args.backend))), flush=True)
    return
  sizes = QUICK_NUM_ENVS if args.quick else args.num_envs
  print(f"brax/ant ({args.backend}), one iteration of the brax_ant preset per num_envs")
  print(f"{HEADER}\n{'-' * len(HEADER)}", flush=True)
  rows = []
  for num_envs in sizes:
    result = run_child(num_envs, args.backend)
    if isinstance(result, str):
      print(f"{num_envs:>8} failed: {result}", flush=True)
      break
    rows.append(result)
    print(format_row(result), flush=True)
  if len(rows) >= 2:
    print(summarize(rows, args.limit_gib), flush=True)


if __name__ == "__main__":
  main()
