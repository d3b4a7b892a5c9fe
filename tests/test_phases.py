"""Where a run's wall time goes: the phases add up to the wall, every chunk's records say where
the time since the previous chunk went, a long phase says what it waits for, and a second run
loads its programs from the persistent compilation cache."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import child_environment, tiny

from ppo_jax import phases, programs, train
from ppo_jax.logger import METRICS_FILE, JsonLines
from ppo_jax.runner import TIMINGS_FILE
from ppo_jax.step import make_env_and_networks


def test_phases_time_blocks_laps_and_warn_when_long():
  lines, shown = [], []
  clock = phases.Phases(lines.append, shown.append, warn_after=0.05)
  with clock("eval", "the evaluation episodes"):
    time.sleep(0.17)
  with clock("train", "the chunk"):
    pass
  assert shown == ["eval", "train"]
  waiting = [line for line in lines if "still waiting" in line]
  assert all(line.startswith("eval: still waiting for the evaluation episodes") for line in waiting)
  assert 2 <= len(waiting) <= 4  # once every 0.05 s while the block ran, then no more
  assert lines[2] == "eval: the stack of every thread follows, on stderr"  # at the second
  time.sleep(0.1)
  assert len(lines) <= 5
  lap = clock.lap()
  assert set(lap) == {"eval", "train"} and 0.17 <= lap["eval"] < 0.5
  assert clock.lap() == {}  # a new lap starts empty; the totals go on
  summary = clock.summary()
  assert list(summary) == ["train", "eval", "unaccounted", "wall"]  # in a run's order
  assert summary["eval"] + summary["train"] + summary["unaccounted"] == summary["wall"]


def test_a_run_accounts_for_its_wall_time(tmp_path):
  cfg = tiny(num_evals=4)
  result = train(cfg, tmp_path / "run", show_progress=False, compilation_cache=False)
  saved = json.loads((tmp_path / "run" / TIMINGS_FILE).read_text())
  timings = saved["phases"]
  assert timings == result.timings and saved["compile"] == result.compile_times
  assert set(result.compile_times) == {"init", "chunk", "evaluator", "eval_keys"}
  expected = {"setup", "env", "compile", "init", "train", "eval"}
  expected |= {"checkpoint", "log", "analysis", "save"}
  assert expected <= set(timings)
  named = sum(v for k, v in timings.items() if k not in ("unaccounted", "wall"))
  assert named >= 0.95 * timings["wall"], timings  # the phases add up to the wall within 5%
  assert result.train_seconds == timings["train"] > 0

  # Each chunk's records hold the seconds of each phase since the previous chunk's records.
  records = JsonLines(tmp_path / "run" / METRICS_FILE).read()
  chunks = records[:: cfg.iterations_per_chunk]
  assert len(chunks) == cfg.num_chunks
  laps = [{k: v for k, v in r.items() if k.startswith("time/")} for r in chunks]
  assert "time/compile" in laps[0] and all("time/compile" not in lap for lap in laps[1:])
  assert all(lap["time/train"] > 0 and lap["time/eval"] > 0 for lap in laps[1:])
  total = sum(sum(lap.values()) for lap in laps)
  assert total <= timings["wall"] and chunks[-1]["wall_time"] <= timings["wall"]
  assert sum(lap["time/train"] for lap in laps) == timings["train"]


# argv: config JSON, cache directory. Prints how many programs came from the cache.
CHILD = r"""
import json, sys
import jax
hits = []
jax.monitoring.register_event_listener(
  lambda event, **kwargs: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None
)
from ppo_jax import PPOConfig, train
result = train(PPOConfig(**json.loads(sys.argv[1])), show_progress=False, compilation_cache=sys.argv[2])
print(json.dumps({"hits": len(hits), "compile": result.compile_seconds}))
"""


def test_a_second_run_loads_its_programs_from_the_compilation_cache(tmp_path):
  cache = tmp_path / "cache"
  config = json.dumps(tiny(num_evals=2).to_dict())
  env = child_environment(None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # however fast this machine compiles

  def run() -> dict:
    done = subprocess.run(
      [sys.executable, "-c", CHILD, config, str(cache)],
      capture_output=True,
      text=True,
      env=env,
      cwd=Path(__file__).parents[1],
      timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])

  first = run()
  assert first["hits"] == 0 and any(cache.iterdir())  # compiled, and kept
  second = run()
  assert second["hits"] >= 2  # the training chunk and the evaluator, at least


def test_on_the_cpu_the_programs_leave_matrix_products_to_xla():
  if not programs.CPU_COMPILER_OPTIONS.items() <= programs.compiler_options("chunk").items():
    pytest.skip("this jaxlib has no YNNPACK fusions to turn off")
  cfg = tiny()
  env, networks = make_env_and_networks(cfg)
  keys = np.stack([jax.random.PRNGKey(0)])
  lowered, _ = programs.lower_programs(cfg, env, networks, None, keys, keys)
  assert "__ynn_fusion" in lowered["chunk"].compile().as_text()  # XLA's default
  compiled = programs.compile_programs(cfg, env, networks, None, keys, keys)
  for name in ("init", "chunk", "evaluator"):
    assert "__ynn_fusion" not in getattr(compiled, name).as_text(), name
  assert programs.compiler_options("init")["xla_backend_optimization_level"] == 0
