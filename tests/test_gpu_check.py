"""`make gpu-check`: a run stopped early gets a diagnosis (its stacks, its last phase), never a
traceback; the wheels a GPU image lacks are chosen and installed as documented; and the whole
`--small` check passes on the CPU (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import gpu_check, gpu_wheels, supervise

# What faulthandler prints on SIGABRT: the thread that took it, then the others.
DUMP = """Fatal Python error: Aborted

Thread 0x00007f0000000001 (most recent call first):
  File "/x/threading.py", line 320 in wait
  File "/x/ppo_jax/watchdog.py", line 107 in run

Current thread 0x00007f0000000002 (most recent call first):
  File "/x/jax/_src/compiler.py", line 330 in backend_compile
  File "/x/ppo_jax/programs.py", line 214 in timed_compile
  File "/x/experiments/train.py", line 230 in main
  File "/x/experiments/train.py", line 244 in <module>

Extension modules: numpy (total: 1)
"""


def test_the_stack_of_the_main_thread_is_found_in_a_dump(tmp_path):
  log = tmp_path / "err"
  log.write_text("compile:   0%|   | 0/10 [00:05<?]\r" + DUMP)
  assert supervise.main_thread_stack(log)[:2] == [
    'File "/x/jax/_src/compiler.py", line 330 in backend_compile',
    'File "/x/ppo_jax/programs.py", line 214 in timed_compile',
  ]
  assert supervise.main_thread_stack(tmp_path / "missing") == []


def test_a_run_with_no_file_yet_is_diagnosed(tmp_path):
  (tmp_path / "logs").mkdir()
  out, err = tmp_path / "logs" / "x.out", tmp_path / "logs" / "x.err"
  out.write_text("run directory: ...\ncompile: still waiting for XLA to compile after 30 s\n")
  err.write_text(DUMP)
  stopped = supervise.Outcome(supervise.EXIT_STOPPED, 300.0, True, out, err)
  lines = supervise.diagnose(tmp_path / "never_made", stopped)
  assert lines[0] == (
    "no chunk of training ended (no metrics.jsonl); the run stopped before its programs were "
    "compiled"
  )
  assert "last phase that waited: compile: still waiting for XLA to compile after 30 s" in lines
  assert any("in timed_compile" in line for line in lines)
  err.write_text("Traceback (most recent call last):\n  ...\nFileExistsError: not empty\n")
  crashed = supervise.Outcome(1, 3.0, False, out, err)
  assert supervise.diagnose(tmp_path, crashed)[0] == "it ended with: FileExistsError: not empty"


def test_a_run_stopped_before_its_first_chunk_gets_a_diagnosis_not_a_traceback(tmp_path, capsys):
  code = gpu_check.main(
    ["--small", "--out", str(tmp_path), "--timeout", "8", "--stages", "end_to_end"]
  )
  said = capsys.readouterr().out
  assert code == 1
  assert "end_to_end did not finish (exit 124):" in said
  assert "no chunk of training ended (no metrics.jsonl)" in said
  assert "where the main thread was (innermost first):" in said
  assert "Traceback" not in said
  [summary] = tmp_path.glob("*/summary.json")
  result = json.loads(summary.read_text())
  assert result["failed"] == ["end_to_end"] and result["stages"]["end_to_end"]["stopped"]
  [err] = tmp_path.glob("*/logs/end_to_end.err")
  assert "(most recent call first)" in err.read_text()  # the stacks, from SIGABRT
  assert not list(Path(supervise.ROOT).glob("core*"))  # and no core file


def test_three_chunks_of_brax_ant():
  full = gpu_check.three_chunks("brax_ant", small=False)
  assert full == {"num_timesteps": 3 * 17 * 327_680, "num_evals": 4}
  assert gpu_check.chunk_iterations("brax_ant", full) == 17
  assert gpu_check.chunk_iterations("brax_ant", gpu_check.three_chunks("brax_ant", True)) == 2


def test_the_wheels_are_ours_never_jax_or_flax_and_only_missing_ones_install(tmp_path):
  wanted = gpu_wheels.requirements("3.12")
  names = {gpu_wheels.canonical(spec.split("==")[0]) for spec in wanted}
  assert {"brax", "mujoco", "mujoco_mjx", "trimesh", "tensorboardx"} <= names
  assert not names & {"jax", "jaxlib", "flax", "numpy", "optax"}  # the image's own
  assert all("==" in spec for spec in wanted)  # at the versions tested here
  for wheel in ("brax-0.14.2-py3-none-any.whl", "no_such_thing-1.0-py3-none-any.whl"):
    (tmp_path / wheel).write_bytes(b"")
  assert [w.name for w in gpu_wheels.missing(tmp_path)] == ["no_such_thing-1.0-py3-none-any.whl"]


@pytest.mark.slow
def test_the_small_check_passes_on_the_cpu(tmp_path, capsys):
  assert gpu_check.main(["--small", "--out", str(tmp_path)]) == 0
  said = capsys.readouterr().out
  assert said.count("  chunk ") == 6 and said.count("  eval ") == 8  # two runs
  [summary] = tmp_path.glob("*/summary.json")
  stages = json.loads(summary.read_text())["stages"]
  assert len(stages["end_to_end"]["chunks"]) == 3
  assert stages["cache"]["phases"]["compile"] < stages["end_to_end"]["phases"]["compile"]
  assert stages["throughput"]["train_sps"] > 0 and stages["brax"]["train_sps"]
