"""A child process under a wall-clock limit, as `experiments.gpu_check` runs each of its stages.

The child's stdout and stderr go to log files as they come (PYTHONUNBUFFERED). Past the limit
it gets SIGABRT, on which Python prints every thread's stack to stderr (PYTHONFAULTHANDLER,
set for every child), and SIGKILL if it is still there 15 s later. `diagnose` then reads what a
training run left (its run directory and logs) and says where it was, whatever files it got to
write. `Utilization` samples nvidia-smi every 500 ms beside a child, where there is one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_STOPPED = 124  # the exit status of a child stopped at its limit, as timeout(1) gives
GRACE_SECONDS = 15.0  # between SIGABRT (stacks) and SIGKILL
PROJECT = ("ppo_jax", "envs", "experiments")  # the packages whose frames a diagnosis names


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a child ended: `exit` its status (EXIT_STOPPED when stopped at the limit)."""

  exit: int
  seconds: float
  stopped: bool
  stdout: Path
  stderr: Path

  def summary(self) -> dict:
    return {"exit": self.exit, "seconds": round(self.seconds, 1), "stopped": self.stopped}


def run(
  command: list[str],
  logs: Path,
  name: str,
  timeout: float,
  env: dict[str, str] | None = None,
  poll: Callable[[], None] = lambda: None,
) -> Outcome:
  """Runs `command` in the repository root, `poll()` every 0.5 s while it runs.

  Args:
    logs: the folder of <name>.out and <name>.err.
    timeout: seconds before the child gets SIGABRT (its stacks), then SIGKILL.
    env: the child's environment (os.environ by default), with PYTHONFAULTHANDLER and
      PYTHONUNBUFFERED set.
  """
  logs.mkdir(parents=True, exist_ok=True)
  stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
  env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"}
  started = time.monotonic()
  with stdout.open("w") as out, stderr.open("w") as err:
    # SIGABRT prints the stacks and leaves no core file: the shell sets the limit, then
    # becomes the child (exec: the same process), with no fork of this threaded process.
    no_core = ["/bin/sh", "-c", 'ulimit -c 0 && exec "$@"', "sh", *command]
    child = subprocess.Popen(no_core, stdout=out, stderr=err, env=env, cwd=ROOT)
    stopped = False
    while child.poll() is None:
      poll()
      if time.monotonic() - started > timeout and not stopped:
        stopped = True
        child.send_signal(signal.SIGABRT)
        try:
          child.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
          child.kill()
      time.sleep(0.5)
    poll()
  code = EXIT_STOPPED if stopped else child.returncode
  return Outcome(code, time.monotonic() - started, stopped, stdout, stderr)


class Utilization:
  """nvidia-smi's GPU utilization and memory every 500 ms into a CSV file, while in the block;
  nothing where there is no nvidia-smi."""

  FIELDS = ("timestamp", "utilization.gpu", "memory.used")

  def __init__(self, path: Path):
    self.path, self.process = path, None

  def __enter__(self) -> Utilization:
    if shutil.which("nvidia-smi"):
      query = f"--query-gpu={','.join(self.FIELDS)}"
      command = ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "500"]
      self.file = self.path.open("w")
      self.process = subprocess.Popen(command, stdout=self.file, stderr=subprocess.DEVNULL)
    return self

  def __exit__(self, *exc) -> None:
    if self.process is not None:
      self.process.terminate()
      self.process.wait()
      self.file.close()

  def summary(self) -> dict | None:
    """{"samples", "gpu_percent_mean", "gpu_percent_max", "memory_mib_max"}, or None."""
    if self.process is None:
      return None
    rows = [row for row in csv.reader(self.path.open()) if len(row) == len(self.FIELDS)]
    try:
      gpu = [float(row[1]) for row in rows]
      memory = [float(row[2]) for row in rows]
    except ValueError:  # "[N/A]" on GPUs that do not report it
      return {"samples": len(rows)}
    if not gpu:
      return {"samples": 0}
    return {
      "samples": len(gpu),
      "gpu_percent_mean": round(sum(gpu) / len(gpu), 1),
      "gpu_percent_max": max(gpu),
      "memory_mib_max": max(memory),
    }


def read_json(path: Path) -> dict | None:
  """A JSON file's record, or None when it is missing or not (yet) whole."""
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def last_lines(path: Path, containing: str, count: int = 1) -> list[str]:
  """The last `count` lines of a log that hold `containing` (the log may be missing)."""
  try:
    lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
  except OSError:
    return []
  return [line.strip() for line in lines if containing in line and line.strip()][-count:]


def main_thread_stack(stderr: Path) -> list[str]:
  """The frames of the main thread (the one whose outermost frame is a module's), innermost
  first, in the last stack dump of the log (faulthandler's "Thread ... (most recent call
  first):")."""
  try:
    text = stderr.read_text(errors="replace")
  except OSError:
    return []
  blocks = [block.strip().splitlines() for block in text.split("\n\n")]
  stacks = [b for b in blocks if b and b[0].endswith("(most recent call first):")]
  main = [b for b in stacks if any(line.rstrip().endswith("in <module>") for line in b)]
  return [line.strip() for line in main[-1][1:]] if main else []


def diagnose(run_dir: Path, outcome: Outcome) -> list[str]:
  """Where a training run that did not finish was, from whatever it got to write."""
  from ppo_jax.logger import METRICS_FILE
  from ppo_jax.records import read_jsonl

  lines = []
  if not outcome.stopped:  # it ended by itself: its last words say why
    lines += [f"it ended with: {line}" for line in last_lines(outcome.stderr, "", count=1)]
  records = read_jsonl(run_dir / METRICS_FILE)
  if not records:
    wrote = "no metrics.jsonl" if not (run_dir / METRICS_FILE).exists() else "no record"
    compiled = last_lines(outcome.stdout, "compiled")
    when = "after compiling" if compiled else "before its programs were compiled"
    lines.append(f"no chunk of training ended ({wrote}); the run stopped {when}")
  else:
    last = records[-1]
    laps = {k.removeprefix("time/"): round(v, 1) for k, v in last.items() if k.startswith("time/")}
    lines.append(
      f"last record: iteration {last.get('iteration')}, {last.get('env_steps', 0):,d} steps; "
      f"its chunk's seconds: {laps}"
    )
  timings = read_json(run_dir / "timings.json")
  if timings is not None:
    lines.append(
      f"timings.json: {len(timings.get('chunks', []))} chunks, phases {timings['phases']}"
    )
  for line in last_lines(outcome.stdout, "still waiting for") + last_lines(
    outcome.stderr, "still waiting for"
  ):
    lines.append(f"last phase that waited: {line}")
  stack = main_thread_stack(outcome.stderr)
  if stack:  # its innermost frames, and the innermost of this project's own
    ours = [frame for frame in stack if any(f'"{ROOT / p}/' in frame for p in PROJECT)]
    shown = stack[:6] + [frame for frame in ours[:3] if frame not in stack[:6]]
    lines.append("where the main thread was (innermost first):")
    lines += [f"  {frame}" for frame in shown]
  lines.append(f"full logs: {outcome.stdout}, {outcome.stderr}")
  return lines
