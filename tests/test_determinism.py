"""Determinism: a config and a seed fix every bit of a run, across processes.

Two runs of the same tiny config and seed, each in a fresh process, give the same metrics
(every key but the timings, NaN for NaN) and the same final state bit for bit; another seed
gives other params and other metrics. The first two runs compile side by side; the third
loads the program from the second's persistent compilation cache (the seed is no part of
the compiled program). XLA's backend optimizations are off, which halves the compile time
and keeps the test near half a minute on two cores; the default-optimized program passes the
same test (drop the flag to check), and test_run_dir compares two of its runs in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tiny import child_environment, tiny

from ppo_jax.logger import is_timing

CFG = tiny(num_evals=3)

# argv: run_dir, config JSON, output .npz: the result's metrics, evals, params and state.
CHILD = r"""
import json, sys
import jax, numpy as np
from ppo_jax import PPOConfig, train

run_dir, config, out = sys.argv[1:]
result = train(PPOConfig(**json.loads(config)), run_dir, show_progress=False)
arrays = {f"metrics/{k}": v for k, v in result.metrics.items()}
arrays.update({f"evals/{k}": v for k, v in result.evals.items()})
for part in ("params", "state"):
  leaves = jax.tree.leaves(jax.device_get(getattr(result, part)))
  arrays.update({f"{part}/{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
np.savez(out, **arrays)
"""


def launch(
  tmp_path: Path, name: str, seed: int, cache: Path | None
) -> tuple[subprocess.Popen, Path]:
  env = child_environment(cache)
  config = json.dumps({**CFG.to_dict(), "seed": seed})
  out = tmp_path / f"{name}.npz"
  log = (tmp_path / f"{name}.log").open("w")
  process = subprocess.Popen(
    [sys.executable, "-c", CHILD, str(tmp_path / name), config, str(out)],
    stdout=log,
    stderr=subprocess.STDOUT,
    env=env,
    cwd=Path(__file__).parents[1],
  )
  log.close()
  return process, out


def finish(process: subprocess.Popen, out: Path, started: float) -> dict[str, np.ndarray]:
  try:
    code = process.wait(timeout=300)
  except subprocess.TimeoutExpired:
    process.kill()
    raise
  log = out.with_suffix(".log")
  assert code == 0, log.read_text()
  print(f"{out.stem}: {time.perf_counter() - started:.1f} s")
  with np.load(out) as data:
    return dict(data)


def differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
  """Keys whose arrays differ in dtype, shape or any bit (NaN equals NaN of the same bits)."""
  assert a.keys() == b.keys()
  return [
    key
    for key in sorted(a)
    if not is_timing(key.split("/", 1)[1])
    and (a[key].dtype, a[key].shape, a[key].tobytes())
    != (b[key].dtype, b[key].shape, b[key].tobytes())
  ]


def test_same_seed_same_bits_other_seed_other_run(tmp_path):
  cache = tmp_path / "compilation_cache"
  started = time.perf_counter()
  # Side by side: two compilations of one program, the second one kept in the cache.
  pending = [launch(tmp_path, "first", CFG.seed, None), launch(tmp_path, "second", CFG.seed, cache)]
  first, second = (finish(*run, started) for run in pending)
  other = finish(*launch(tmp_path, "other_seed", CFG.seed + 1, cache), time.perf_counter())

  assert {key.split("/")[0] for key in first} == {"metrics", "evals", "params", "state"}
  assert differing(first, second) == []  # raw bytes: a NaN equals the same NaN
  changed = differing(first, other)
  assert {"metrics/total_loss", "metrics/episode_return", "evals/eval/episode_return"} <= set(
    changed
  )
  assert all(key in changed for key in first if key.startswith("params/"))
