"""One command for a GPU window: what the machine has, a whole brax_ant run with a line per chunk
and per evaluation, the same programs from the compilation cache, throughput, Playground's Go1
on MuJoCo Warp and on JAX, and Brax's own trainer on the same settings as ours.

python -m experiments.gpu_check [--small] [--out DIR] [--timeout SECONDS] [--stages NAME ...]
make gpu-check ARGS="..."   (about 8 minutes on one H100 or H200, compilation included)
make gpu-wheels             (where pip reaches PyPI: the wheels a bare GPU image lacks, in .whl/)

First the wheels of .whl/ whose distribution this Python lacks are installed (see
`experiments.gpu_wheels`). Every stage then runs in a process of its own: this one never starts
JAX's backend, so it holds no GPU memory. Each child's stdout and stderr go to OUT/logs/.

  versions    jax, jaxlib, brax, mujoco, mujoco-mjx, mujoco_warp, flax, optax, orbax and the GPU
              (nvidia-smi).
  end_to_end  experiments.train brax_ant for three of its chunks (four evaluations, three
              checkpoints); a line per chunk (SPS; train, eval, checkpoint and log seconds; peak
              memory) and per evaluation as they land; nvidia-smi's utilization every 500 ms
              beside it (OUT/utilization_end_to_end.csv).
  cache       the same run in a fresh process, its programs loaded from the persistent
              compilation cache the first filled (OUT/compilation_cache).
  throughput  ppo_jax.benchmark.measure on brax_ant's training chunk (loaded from the cache),
              against rollout alone; XLA_PYTHON_CLIENT_PREALLOCATE=false.
  go1         where MuJoCo Menagerie is on disk, Playground's Go1JoystickFlatTerrain throughput
              on "warp" (where the GPU has mujoco_warp) and on "jax".
  brax        Brax's own ppo.train with the settings and steps of end_to_end: its SPS.

A stage that runs past --timeout gets SIGABRT: Python prints every thread's stack to its log
(PYTHONFAULTHANDLER is set), then SIGKILL; the check says where the run was (the last phase
that waited, the last record, the main thread's stack) and goes on. OUT/summary.json holds
every figure. `--small` runs the same stages at sizes a CPU finishes in a few minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from experiments import gpu_wheels, supervise

STAGES = ("end_to_end", "cache", "throughput", "go1", "brax")
DISTRIBUTIONS = (
  "jax",
  "jaxlib",
  "jax-cuda12-plugin",
  "jax-cuda12-pjrt",
  "brax",
  "mujoco",
  "mujoco-mjx",
  "mujoco-warp",
  "warp-lang",
  "playground",
  "flax",
  "optax",
  "orbax-checkpoint",
)
# brax_ant and Go1 at sizes a CPU trains in seconds a chunk (three chunks of two iterations).
SMALL = {"num_envs": 64, "batch_size": 32, "num_eval_envs": 16, "episode_length": 100}
GO1 = "playground_go1_joystick_flat_terrain"
CACHE = "compilation_cache"  # OUT/compilation_cache: every stage's compiled programs


def versions() -> dict:
  """The installed versions of DISTRIBUTIONS (None for absent ones), whether mujoco_warp
  imports, and nvidia-smi's GPUs."""
  found = {}
  for name in DISTRIBUTIONS:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
  found["mujoco_warp importable"] = importlib.util.find_spec("mujoco_warp") is not None
  gpus = []
  if shutil.which("nvidia-smi"):
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, timeout=60)
    gpus = done.stdout.strip().splitlines()
  found["gpus"] = gpus
  return found


def three_chunks(preset: str, small: bool) -> dict:
  """Config overrides that make `preset` run three of its chunks: four evaluations."""
  from experiments.presets import PRESETS

  cfg = dataclasses.replace(PRESETS[preset], **(SMALL if small else {}))
  per_chunk = 2 if small else cfg.iterations_per_chunk
  steps = 3 * per_chunk * cfg.env_steps_per_iteration
  overrides = (SMALL if small else {}) | {"num_timesteps": steps, "num_evals": 4}
  assert dataclasses.replace(cfg, **overrides).iterations_per_chunk == per_chunk
  return overrides


def chunk_iterations(preset: str, overrides: dict) -> int:
  from experiments.presets import PRESETS

  return dataclasses.replace(PRESETS[preset], **overrides).iterations_per_chunk


def arguments(overrides: dict) -> list[str]:
  return [arg for name, value in overrides.items() for arg in (f"--{name}", str(value))]


def gib(count: int | None) -> str:
  return "n/a" if count is None else f"{count / 2**30:.1f} GiB"


class Progress:
  """Prints a run directory's chunks (timings.json) and evaluations (evals.jsonl) as they land."""

  def __init__(self, run_dir: Path, chunks: int):
    self.run_dir, self.chunks, self.shown_chunks, self.shown_evals = run_dir, chunks, 0, 0

  def __call__(self) -> None:
    from ppo_jax.records import read_jsonl

    timings = supervise.read_json(self.run_dir / "timings.json") or {}
    for chunk in timings.get("chunks", [])[self.shown_chunks :]:
      self.shown_chunks += 1
      seconds = chunk["seconds"]
      phases = ("train", "eval", "checkpoint", "log")
      each = ", ".join(f"{k} {seconds.get(k, 0.0):.1f} s" for k in phases)
      print(
        f"  chunk {chunk['chunk']}/{self.chunks}: {chunk['sps']:,.0f} SPS; {each}; peak memory "
        f"{gib(chunk['peak_memory_bytes'])}",
        flush=True,
      )
    # The evaluation after chunk k is shown after chunk k's line (its seconds include it).
    evals = read_jsonl(self.run_dir / "evals.jsonl")[: self.shown_chunks + 1]
    for record in evals[self.shown_evals :]:
      self.shown_evals += 1
      print(
        f"  eval {self.shown_evals} @ {record['env_steps']:,d} steps: return "
        f"{record['eval/episode_return']:.1f} +- {record['eval/episode_return_std']:.1f}, "
        f"length {record['eval/episode_length']:.0f}",
        flush=True,
      )


@dataclasses.dataclass
class Check:
  """One run of the check: where it writes, at what size, with what limit per stage."""

  out: Path
  small: bool
  timeout: float
  env: dict

  def train(self, name: str) -> dict:
    """experiments.train brax_ant for three chunks into OUT/<name>, with the utilization trace."""
    run_dir, overrides = self.out / name, three_chunks("brax_ant", self.small)
    command = [sys.executable, "-m", "experiments.train", "brax_ant", "--run_dir", str(run_dir)]
    command += ["--compilation_cache", str(self.out / CACHE), *arguments(overrides)]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    with supervise.Utilization(self.out / f"utilization_{name}.csv") as utilization:
      outcome = supervise.run(
        command, self.out / "logs", name, self.timeout, self.env, Progress(run_dir, 3)
      )
    result = outcome.summary() | {"utilization": utilization.summary()}
    timings = supervise.read_json(run_dir / "timings.json")
    if timings is not None:
      result |= {k: timings[k] for k in ("phases", "compile", "chunks", "peak_memory_bytes")}
    if outcome.exit != 0:
      result["diagnosis"] = supervise.diagnose(run_dir, outcome)
      for line in [f"{name} did not finish (exit {outcome.exit}):", *result["diagnosis"]]:
        print(f"  {line}", flush=True)
      return result
    phases, compile_seconds = timings["phases"], timings["compile"]
    sps = [chunk["sps"] for chunk in timings["chunks"]]
    print(
      f"  {name}: wall {phases['wall']:.1f} s, compile {phases.get('compile', 0.0):.1f} s "
      f"({', '.join(f'{k} {v:.1f}' for k, v in compile_seconds.items())}), training "
      f"{phases.get('train', 0.0):.1f} s, SPS {min(sps):,.0f}..{max(sps):,.0f}; GPU "
      f"{(result['utilization'] or {}).get('gpu_percent_mean', 'n/a')}% busy on average",
      flush=True,
    )
    return result

  def throughput(
    self, name: str, preset: str, trainer: str, overrides: dict, iterations: int = 2
  ) -> dict:
    """experiments.throughput in a child that preallocates no GPU memory."""
    path = self.out / f"{name}.json"
    command = [sys.executable, "-m", "experiments.throughput", preset, "--trainer", trainer]
    command += ["--json", str(path), "--compilation_cache", str(self.out / CACHE)]
    command += ["--iterations", str(iterations), *arguments(overrides)]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    env = self.env | {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    outcome = supervise.run(command, self.out / "logs", name, self.timeout, env)
    result = outcome.summary() | (supervise.read_json(path) or {})
    if outcome.exit != 0:
      result["log"] = supervise.last_lines(outcome.stderr, "", count=8)
    print(f"  {name}: {describe(result)}", flush=True)
    return result


def describe(result: dict) -> str:
  """A throughput child's result in a line."""
  if "skipped" in result:
    return f"skipped: {result['skipped']}"
  if result.get("exit", 0) != 0:
    return f"failed (exit {result['exit']}): {' | '.join(result.get('log', []))}"
  if result["trainer"] == "brax":
    sps = result["train_sps"] or [0.0]
    error = f"; {result['brax_error']}" if "brax_error" in result else ""
    each = ", ".join(f"{value:,.0f}" for value in sps)
    return (
      f"Brax's ppo.train {sps[-1]:,.0f} SPS in its last chunk (each: {each}; the first holds its "
      f"compilation), wall {result['wall_seconds']:.1f} s{error}"
    )
  return (
    f"{result['env']} ({result['env_backend'] or 'default'}, {result['num_envs']} envs): "
    f"training {result['train_sps']:,.0f} SPS, rollout only {result['rollout_sps']:,.0f} SPS "
    f"(ratio {result['ratio']:.2f}); the chunk compiled in {result['train_compile_seconds']:.1f} s"
  )


def run_stages(check: Check, stages: list[str]) -> dict:
  """Each stage asked for, in STAGES' order; the cache stage only after a whole first run."""
  results = {}
  ant = three_chunks("brax_ant", check.small)
  for stage in (s for s in STAGES if s in stages):
    if stage == "end_to_end":
      results[stage] = check.train("end_to_end")
    elif stage == "cache":
      if results.get("end_to_end", {}).get("exit", 0) != 0:
        results[stage] = {"skipped": "the first run did not finish"}
        continue
      results[stage] = check.train("cache")
    elif stage == "throughput":  # end_to_end's chunk: its compiled program is in the cache
      per_chunk = chunk_iterations("brax_ant", ant)
      results[stage] = check.throughput("throughput", "brax_ant", "ours", ant, per_chunk)
    elif stage == "brax":
      results[stage] = check.throughput("brax", "brax_ant", "brax", ant)
    elif stage == "go1":
      small = SMALL | {"num_resets_per_eval": 0} if check.small else {"num_resets_per_eval": 0}
      results[stage] = {
        backend: check.throughput(f"go1_{backend}", GO1, "ours", small | {"env_backend": backend})
        for backend in ("warp", "jax")
      }
  return results


def failed(results: dict) -> list[str]:
  """The runs that did not end well (a skipped one did not fail); go1 has one per backend."""
  runs = {}
  for stage, result in results.items():
    runs |= {f"{stage}/{k}": r for k, r in result.items()} if stage == "go1" else {stage: result}
  return [name for name, result in runs.items() if result.get("exit", 0) != 0]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--small", action="store_true", help="CPU sizes: checks the command")
  parser.add_argument("--timeout", type=float, default=300.0, help="limit of each stage, s")
  parser.add_argument("--out", type=Path, default=Path("runs") / "gpu_check", help="folder")
  parser.add_argument("--stages", nargs="*", choices=STAGES, default=list(STAGES))
  parser.add_argument("--wheels", type=Path, default=Path(".whl"), help="wheels to install")
  args = parser.parse_args(argv)
  started = time.monotonic()
  out = args.out.absolute() / time.strftime("%Y%m%d-%H%M%S")
  out.mkdir(parents=True)
  installed = gpu_wheels.install(args.wheels, out / "site") if args.wheels.is_dir() else []
  if importlib.util.find_spec("jax") is None:
    print(f"{sys.executable} has no jax: run the check with the GPU image's Python", flush=True)
    return 2
  path = os.pathsep.join(p for p in (str(out / "site"), os.environ.get("PYTHONPATH")) if p)
  env = dict(os.environ, PYTHONPATH=path)
  found = versions()
  print(f"gpu_check -> {out}; installed from {args.wheels}: {installed or 'nothing'}")
  print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items() if k != "gpus"))
  print(f"GPUs: {found['gpus'] or 'none (no nvidia-smi)'}", flush=True)
  results = run_stages(Check(out, args.small, args.timeout, env), args.stages)
  bad = failed(results)
  summary = {"versions": found, "small": args.small, "stages": results, "failed": bad}
  summary["wall_seconds"] = round(time.monotonic() - started, 1)
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  verdict = f"failed: {', '.join(bad)}" if bad else "every stage ran"
  print(f"gpu_check: {verdict}; {summary['wall_seconds']:.0f} s; {out / 'summary.json'}")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
