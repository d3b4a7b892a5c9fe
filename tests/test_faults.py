"""Faults: kill -9 at any moment, a full disk, an unwritable run directory.

A run killed at any point resumes from its latest complete checkpoint and ends bit-identical
to a run never stopped; a full disk fails with the step and the path named, and leaves the
previous checkpoint restorable; a run directory that cannot be created fails at once.

Training runs as child processes (`CHILD`, which calls `ppo_jax.train` as the CLI does), so
that they can be killed. They share a persistent compilation cache: the first one compiles,
the others load, which cuts each launch from ~20 s to ~7 s on two cores (XLA's backend
optimizations are off in all of them, which halves the first compilation). Faults are injected
inside a child by wrapping the file operations orbax and the logger call (etils' path class,
`os.write`): the library itself has no test hooks.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from etils import epath
from tiny import child_environment, tiny

from ppo_jax import checkpoint, runner, train
from ppo_jax.logger import EVALS_FILE, METRICS_FILE, JsonLines, is_timing
from ppo_jax.step import init_state, make_env_and_networks

CFG = tiny(num_evals=5)  # 8 iterations in 4 chunks of 2: checkpoints 2, 4, 6 and 8
TMP = ".orbax-checkpoint-tmp"  # orbax's name for a checkpoint being written

# argv: run_dir, config JSON, "new" | "resume", fault ("none" or "<kind>:<at>").
CHILD = r"""
import errno, json, os, signal, sys
from etils import epath
from ppo_jax import PPOConfig, train

run_dir, config, mode, fault = sys.argv[1:]
kind, _, at = fault.partition(":")
GPath = type(epath.Path(run_dir))  # the path class orbax writes through

if kind == "kill_before_rename":  # all of checkpoint `at` written, not yet renamed
  rename = GPath.rename
  def rename_or_die(self, target):
    if self.name == f"{at}.orbax-checkpoint-tmp":
      os.kill(os.getpid(), signal.SIGKILL)
    return rename(self, target)
  GPath.rename = rename_or_die

if kind == "enospc_checkpoint":  # the disk fills while checkpoint `at` is written
  write_text = GPath.write_text
  def write_text_or_fail(self, *args, **kwargs):
    if f"{at}.orbax-checkpoint-tmp/host" in str(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)
  GPath.write_text = write_text_or_fail

if kind == "enospc_metrics":  # half of the records from iteration `at` on fit, then none
  write = os.write
  def write_half_then_fail(fd, data):
    if bytes(data).startswith(b'{"iteration": %d,' % int(at)):
      write(fd, bytes(data)[: len(data) // 2])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write(fd, data)
  os.write = write_half_then_fail

train(PPOConfig(**json.loads(config)), run_dir, resume=mode == "resume", show_progress=False)
"""


class Child:
  """One training process, its output in <run_dir>.<name>.log."""

  started_here: list[Child] = []  # killed at the end of the test that started them, if alive

  def __init__(self, run_dir: Path, name: str, cache: Path | None, resume=False, fault="none"):
    env = child_environment(cache)
    self.name, self.run_dir = name, run_dir
    self.log = run_dir.with_name(f"{run_dir.name}.{name}.log")
    config = json.dumps(CFG.to_dict())
    mode = "resume" if resume else "new"
    with self.log.open("w") as log:
      self.process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), config, mode, fault],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=Path(__file__).parents[1],
      )
    self.started = time.perf_counter()
    Child.started_here.append(self)

  def running(self) -> bool:
    return self.process.poll() is None

  def kill(self) -> None:
    self.process.send_signal(signal.SIGKILL)

  def wait(self, timeout: float = 120.0) -> int:
    try:
      code = self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise
    print(f"{self.name}: exit {code} after {time.perf_counter() - self.started:.1f} s")
    return code

  def output(self) -> str:
    return self.log.read_text()

  def last_line(self) -> str:
    lines = [line for line in self.output().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def wait_for(condition, child: Child, timeout: float = 120.0) -> bool:
  """Polls `condition` every millisecond while `child` runs; whether it came true."""
  deadline = time.monotonic() + timeout
  while child.running() and time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(0.001)
  return condition()


@pytest.fixture(autouse=True)
def no_child_left_running():
  yield
  for child in Child.started_here:
    if child.running() and child.name != "reference":
      child.kill()
      child.process.wait()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("compilation_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """A run never stopped, started at once; its own compilation, apart from the cache, so that
  it may run beside the first child that fills the cache."""
  child = Child(tmp_path_factory.mktemp("reference") / "run", "reference", cache=None)
  yield child
  if child.running():
    child.kill()
    child.process.wait()


@pytest.fixture(scope="module")
def template():
  """The shapes and dtypes of a checkpointed state, to restore checkpoints with (traced, not
  compiled): train() keeps a leading seed axis, of size 1 for a single seed."""
  env, networks = make_env_and_networks(CFG)
  return jax.eval_shape(lambda: jax.tree.map(lambda x: x[None], init_state(CFG, env, networks)))


def reference_dir(reference: Child) -> Path:
  if reference.process.returncode is None:
    assert reference.wait() == 0, reference.output()
  assert reference.process.returncode == 0, reference.output()
  return reference.run_dir


def steps(run_dir: Path) -> list[str]:
  return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name[0].isdigit())


def bits(tree) -> list[tuple[str, tuple[int, ...], bytes]]:
  """Every leaf as (dtype, shape, raw bytes): equality is bitwise, NaN payloads included."""
  leaves = []
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    leaf = np.asarray(leaf)
    leaves.append((leaf.dtype.str, leaf.shape, leaf.tobytes()))
  return leaves


def latest(run_dir: Path, template):
  return checkpoint.Checkpointer(run_dir, CFG.keep_checkpoints).restore_latest(template)


def assert_same_run(run_dir: Path, reference_run: Path, template) -> None:
  """Same final checkpoint bit for bit, same policy, one record per iteration, same records."""
  assert not [p for p in (run_dir / "checkpoints").iterdir() if TMP in p.name]
  (state, host), (expected, expected_host) = (latest(d, template) for d in (run_dir, reference_run))
  assert int(state.iteration[0]) == CFG.num_iterations
  assert bits(state) == bits(expected)
  assert host == expected_host
  policy = Path("policy", "params.msgpack")
  assert (run_dir / policy).read_bytes() == (reference_run / policy).read_bytes()
  metrics = JsonLines(run_dir / METRICS_FILE).read()
  assert [r["iteration"] for r in metrics] == list(range(1, CFG.num_iterations + 1))
  untimed = lambda path: [  # noqa: E731
    {k: v for k, v in r.items() if not is_timing(k)} for r in JsonLines(path).read()
  ]
  for name in (METRICS_FILE, EVALS_FILE):
    assert untimed(run_dir / name) == untimed(reference_run / name), name


def test_kill_9_at_any_moment_resumes_bit_identical(tmp_path, cache, reference, template):
  run_dir = tmp_path / "run"
  seed = random.randrange(2**32)
  rng = random.Random(seed)

  # 1. Killed with checkpoint 4 wholly written but not yet renamed into place: the most
  # complete-looking partial checkpoint there is. (Compiles beside the reference run.)
  child = Child(run_dir, "kill_before_rename", cache, fault="kill_before_rename:4")
  assert child.wait() == -signal.SIGKILL, child.output()
  partial = run_dir / "checkpoints" / f"4{TMP}"
  assert partial.is_dir() and (partial / "state").is_dir()
  assert steps(run_dir) == ["2", f"4{TMP}"]
  # Iterations 1-4 were logged before checkpoint 4 began, maybe 5-6 too while it was being
  # written in the background: those past checkpoint 2 are redone on resume.
  assert len(JsonLines(run_dir / METRICS_FILE).read()) in (4, 6)
  assert checkpoint.Checkpointer(run_dir, CFG.keep_checkpoints).latest_step() == 2
  reference_run = reference_dir(reference)

  # 2. Killed from outside while checkpoint 6 is being written (resumed from 2, it writes 4,
  # then 6): as soon as orbax's temporary directory for 6 shows up.
  child = Child(run_dir, "kill_while_writing", cache, resume=True)
  writing = run_dir / "checkpoints" / f"6{TMP}"
  seen = wait_for(writing.exists, child)
  child.kill()
  assert seen and child.wait() == -signal.SIGKILL, child.output()
  assert checkpoint.Checkpointer(run_dir, CFG.keep_checkpoints).latest_step() in (4, 6)

  # 3. Killed at a random moment once the resumed run has logged a new iteration: in a
  # chunk, an evaluation, a metrics write, a checkpoint, the policy, or after the end.
  child = Child(run_dir, "kill_at_random", cache, resume=True)
  metrics = run_dir / METRICS_FILE
  inode = metrics.stat().st_ino
  count = lambda: len(JsonLines(metrics).read())  # noqa: E731
  # Resuming replaces metrics.jsonl with its records up to the checkpoint, then appends.
  wait_for(lambda: metrics.stat().st_ino != inode, child)
  rewound = count()
  wait_for(lambda: count() > rewound, child)
  delay = rng.uniform(0.0, 0.6)
  time.sleep(delay)
  child.kill()
  code = child.wait()
  print(f"random kill (seed {seed}) after {delay:.3f} s: exit {code}, checkpoints {steps(run_dir)}")
  assert code in (-signal.SIGKILL, 0), child.output()

  # 4. The last resume runs to the end.
  child = Child(run_dir, "resume_to_the_end", cache, resume=True)
  assert child.wait() == 0, child.output()
  assert_same_run(run_dir, reference_run, template)


def test_disk_full_fails_clearly_and_the_previous_checkpoint_resumes(
  tmp_path, cache, reference, template
):
  run_dir = tmp_path / "run"
  # 1. The disk fills while checkpoint 4 is written.
  child = Child(run_dir, "enospc_checkpoint", cache, fault="enospc_checkpoint:4")
  assert child.wait() == 1
  assert child.last_line() == (
    f"OSError: [Errno {errno.ENOSPC}] disk full ({os.strerror(errno.ENOSPC)}) while saving "
    f"checkpoint 4 to {run_dir.absolute() / 'checkpoints' / '4'}; "
    "the previous checkpoint 2 is intact"
  ), child.output()
  assert steps(run_dir) == ["2"]  # the partial write is gone
  state, host = latest(run_dir, template)
  assert int(state.iteration[0]) == 2 and host["config"] == json.loads(json.dumps(CFG.to_dict()))

  # 2. Resumed from 2, the disk fills while metrics.jsonl takes iterations 3 and 4: the
  # half written is taken back, so the file holds whole lines only.
  child = Child(run_dir, "enospc_metrics", cache, resume=True, fault="enospc_metrics:3")
  assert child.wait() == 1
  assert child.last_line().startswith(
    f"OSError: [Errno {errno.ENOSPC}] could not append 2 records to {run_dir / METRICS_FILE}"
  ), child.output()
  text = (run_dir / METRICS_FILE).read_text()
  assert text.endswith("\n") and [json.loads(line)["iteration"] for line in text.splitlines()] == [
    1,
    2,
  ]

  # 3. With room again, a resume from checkpoint 2 runs to the end as if nothing happened.
  child = Child(run_dir, "resume_to_the_end", cache, resume=True)
  assert child.wait() == 0, child.output()
  assert_same_run(run_dir, reference_dir(reference), template)


def test_checkpoint_save_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
  state = {"w": np.arange(6.0, dtype=np.float32), "step": np.zeros((), np.int32)}
  checkpoints = checkpoint.Checkpointer(tmp_path, keep=3)
  checkpoints.save(1, state, {"step": 1})
  checkpoints.wait()
  GPath = type(epath.Path(str(tmp_path)))  # noqa: N806
  write_text = GPath.write_text

  def full(self, *args, **kwargs):
    if TMP in str(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(GPath, "write_text", full)
  with pytest.raises(
    OSError, match="disk full .* checkpoint 2 to .*; the previous checkpoint 1 is"
  ):
    checkpoints.save(2, {**state, "step": np.full((), 2, np.int32)}, {"step": 2})
    checkpoints.wait()  # the write runs in the background; its failure surfaces here
  monkeypatch.undo()
  assert steps(tmp_path) == ["1"]
  restored, host = checkpoint.Checkpointer(tmp_path, keep=3).restore_latest(state)
  assert host == {"step": 1} and int(restored["step"]) == 0


def test_json_lines_keep_whole_lines_only(tmp_path, monkeypatch):
  lines = JsonLines(tmp_path / "metrics.jsonl")
  lines.write([{"iteration": 1}, {"iteration": 2}])
  before = lines.path.read_bytes()
  # A full disk: half the batch is written, then the write fails.
  write = os.write

  def half(fd, data):
    if bytes(data).startswith(b'{"iteration": 3'):
      write(fd, bytes(data)[: len(data) // 2])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write(fd, data)

  monkeypatch.setattr(os, "write", half)
  with pytest.raises(OSError, match=re.escape(f"could not append 2 records to {lines.path}")):
    lines.write([{"iteration": 3}, {"iteration": 4}])
  monkeypatch.undo()
  assert lines.path.read_bytes() == before
  # A kill mid-write (no code runs after it) can leave a line cut short: it is dropped.
  with lines.path.open("a") as f:
    f.write('{"iteration": 3, "lo')
  assert lines.read() == [{"iteration": 1}, {"iteration": 2}]
  assert lines.truncate(lambda r: True) == [{"iteration": 1}, {"iteration": 2}]
  assert lines.path.read_bytes() == before
  # A damaged line in the middle is corruption, not a cut: it is an error.
  lines.path.write_text('{"iteration": 1}\n{"iter\n{"iteration": 3}\n')
  with pytest.raises(ValueError, match="line 2"):
    lines.read()


def test_an_unwritable_parent_fails_before_compiling(tmp_path, monkeypatch):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    (locked / "probe").mkdir()  # root (CAP_DAC_OVERRIDE) writes anyway
  except PermissionError:
    pass
  else:
    pytest.skip("this user ignores permissions (root)")

  def no_compiling(*args, **kwargs):
    raise AssertionError("got past the run directory")

  monkeypatch.setattr(runner, "make_env_and_networks", no_compiling)
  try:
    message = f"cannot create the run directory {locked / 'run'}: no permission to write in"
    with pytest.raises(PermissionError, match=re.escape(f"{message} {locked}")):
      train(CFG, locked / "run", show_progress=False)
  finally:
    locked.chmod(0o700)
  assert not (locked / "run").exists()
