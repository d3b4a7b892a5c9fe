"""No silent stall: a phase that hangs says so through a pipe, in time, and names its line.

The children here train with a phase that never ends (building the env sleeps), their stdout and
stderr pipes read line by line as a cluster's log file or `tee` would.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tiny import child_environment, tiny

from ppo_jax import train, watchdog
from ppo_jax.runner import TIMINGS_FILE

ROOT = Path(__file__).parents[1]

# A run whose env phase never ends. argv: "progress" to show the progress bar, or not.
STALLED_RUN = r"""
import sys, time
sys.path.insert(0, "tests")
from tiny import tiny
from ppo_jax import runner

def stuck(cfg):
  print("stalling", flush=True)
  time.sleep(600)

runner.make_env_and_networks = stuck
runner.train(tiny(), show_progress=sys.argv[1] == "progress", compilation_cache=False)
"""

# The same stall under experiments.train, the command line. argv: the run directory.
STALLED_COMMAND = r"""
import sys, time
from ppo_jax import runner

def stuck(cfg):
  print("stalling", flush=True)
  time.sleep(600)

runner.make_env_and_networks = stuck
from experiments import train
train.main(["cartpole_balance", "--run_dir", sys.argv[1], "--no_compilation_cache"])
"""


class Child:
  """A Python child whose stdout and stderr lines are read as they come, with their times."""

  def __init__(self, script: str, *args: str, interval: str | None = None):
    env = child_environment(None)
    env.pop(watchdog.INTERVAL_VARIABLE, None)
    if interval is not None:
      env[watchdog.INTERVAL_VARIABLE] = interval
    self.process = subprocess.Popen(
      [sys.executable, "-c", script, *args],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
      cwd=ROOT,
    )
    self.lines: queue.Queue = queue.Queue()
    self.seen: dict[str, list[tuple[float, str]]] = {"stdout": [], "stderr": []}
    for name in self.seen:
      threading.Thread(target=self._read, args=(name,), daemon=True).start()

  def _read(self, name: str) -> None:
    for line in getattr(self.process, name):
      self.lines.put((name, time.monotonic(), line))

  def wait_for(self, stream: str, text: str, timeout: float) -> float:
    """The time the first line of `stream` holding `text` came (waiting up to `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
      for when, line in self.seen[stream]:
        if text in line:
          return when
      try:
        name, when, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        raise AssertionError(f"no {text!r} on {stream} in {timeout} s: {self.seen}") from None
      self.seen[name].append((when, line))

  def text(self, stream: str, settle: float = 0.0) -> str:
    """Everything `stream` said so far (after `settle` more seconds)."""
    deadline = time.monotonic() + settle
    while (left := deadline - time.monotonic()) > 0:
      try:
        name, when, line = self.lines.get(timeout=left)
        self.seen[name].append((when, line))
      except queue.Empty:
        break
    return "".join(line for _, line in self.seen[stream])

  def stop(self) -> None:
    self.process.kill()
    self.process.wait()


@pytest.fixture
def children():
  started = []
  yield lambda *args, **kwargs: started.append(Child(*args, **kwargs)) or started[-1]
  for child in started:
    child.stop()


@pytest.mark.parametrize("progress", [True, False])
def test_a_stalled_phase_speaks_through_a_pipe_and_dumps_the_stacks_once(children, progress):
  child = children(STALLED_RUN, "progress" if progress else "quiet", interval="1")
  stalled = child.wait_for("stdout", "stalling", timeout=120)
  # With the progress bar the line comes above it, on stdout; without, on stderr.
  stream = "stdout" if progress else "stderr"
  waiting = "env: still waiting for builtin/cartpole_balance to be built after"
  assert child.wait_for(stream, waiting, timeout=30) - stalled < 5
  child.wait_for(stream, "env: the stack of every thread follows, on stderr", timeout=30)
  child.wait_for("stderr", "in stuck", timeout=30)  # the stalled line, named
  said = child.text(stream, settle=3.0)  # three more warnings: no second dump
  assert said.count(waiting) >= 4
  assert said.count("the stack of every thread follows") == 1
  assert child.text("stderr").count("in stuck") == 1


@pytest.mark.slow
def test_with_the_default_interval_a_stalled_phase_speaks_within_35_seconds(children):
  child = children(STALLED_RUN, "progress")
  stalled = child.wait_for("stdout", "stalling", timeout=120)
  said = child.wait_for("stdout", "env: still waiting for", timeout=40)
  assert 25 < said - stalled < 35


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_experiments_train_dumps_its_stacks_on_sigusr1(children, tmp_path):
  child = children(STALLED_COMMAND, str(tmp_path / "run"), interval="600")
  child.wait_for("stdout", "stalling", timeout=120)
  assert f"kill -USR1 {child.process.pid}" in child.text("stdout")
  os.kill(child.process.pid, signal.SIGUSR1)
  child.wait_for("stderr", "in stuck", timeout=30)
  assert child.process.poll() is None  # the run goes on


def test_the_interval_comes_from_the_environment(monkeypatch):
  monkeypatch.delenv(watchdog.INTERVAL_VARIABLE, raising=False)
  assert watchdog.interval() == 30.0
  monkeypatch.setenv(watchdog.INTERVAL_VARIABLE, "2.5")
  assert watchdog.interval() == 2.5
  for bad in ("0", "-1", "soon", "inf", "nan"):
    monkeypatch.setenv(watchdog.INTERVAL_VARIABLE, bad)
    with pytest.raises(ValueError, match=f"{watchdog.INTERVAL_VARIABLE} .* positive number"):
      train(tiny(), show_progress=False, compilation_cache=False)


class Stop(Exception):
  pass


def test_timings_are_on_disk_after_every_chunk(tmp_path):
  cfg = tiny(num_evals=4)
  calls = []

  def progress_fn(record):
    calls.append(record)
    if len(calls) == 2:  # after the first chunk, its evaluation and its checkpoint
      raise Stop

  with pytest.raises(Stop):
    train(cfg, tmp_path / "run", show_progress=False, progress_fn=progress_fn)
  saved = json.loads((tmp_path / "run" / TIMINGS_FILE).read_text())
  assert saved["complete"] is False
  [chunk] = saved["chunks"]
  assert chunk["chunk"] == 1 and chunk["iteration"] == cfg.iterations_per_chunk
  assert set(chunk["seconds"]) == {"train", "log", "eval", "checkpoint"}
  assert chunk["sps"] > 0 and chunk["peak_memory_bytes"] is None  # the CPU reports none
  assert saved["phases"]["train"] == chunk["seconds"]["train"]
  assert set(saved["compile"]) == {"init", "chunk", "evaluator", "eval_keys"}
