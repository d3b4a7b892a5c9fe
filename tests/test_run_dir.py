"""The run directory: every file written, never overwritten, bit-identical resume, load_policy."""

from __future__ import annotations

import json
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny

from experiments import train as train_cli
from ppo_jax import load_policy, train
from ppo_jax.logger import EVALS_FILE, METRICS_FILE, is_timing
from ppo_jax.monitor import LABELS
from ppo_jax.plot import MARKS, PLOT_FILE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_run_writes_every_file(tmp_path):
  run_dir = train_cli.main(
    [
      "cartpole_balance",
      "--runs",
      str(tmp_path),
      "--num_timesteps",
      "1024",
      "--num_envs",
      "8",
      "--batch_size",
      "8",
      "--num_minibatches",
      "4",
      "--unroll_length",
      "8",
      "--num_evals",
      "3",
      "--num_eval_envs",
      "4",
      "--policy_hidden_layer_sizes",
      "16,16",
      "--value_hidden_layer_sizes",
      "16,16",
      "--keep_checkpoints",
      "1",
    ]
  )
  assert run_dir.parent == tmp_path and run_dir.name.startswith("cartpole_balance-")
  cfg = json.loads((run_dir / "config.json").read_text())
  assert cfg["num_envs"] == 8 and cfg["policy_hidden_layer_sizes"] == [16, 16]
  metrics = read_jsonl(run_dir / METRICS_FILE)
  assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
  for key in ("approx_kl", "clip_fraction", "exact_kl", "entropy", "sps", "wall_time", "env_steps"):
    assert all(isinstance(m[key], (int, float)) for m in metrics), key
  assert len(metrics[0]["approx_kl_per_epoch"]) == cfg["num_updates_per_batch"]
  evals = read_jsonl(run_dir / EVALS_FILE)
  assert [e["env_steps"] for e in evals] == [0, 512, 1024]
  assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
  assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()] == ["4"]
  assert (run_dir / "policy" / "params.msgpack").exists()
  assert (run_dir / PLOT_FILE).read_bytes()[:8] == PNG_MAGIC
  # What the plot's safety panel and label marks read is in every record.
  marked = {key for key, _ in MARKS.values()} | {f"label/{label}" for label in LABELS}
  for key in marked | {"termination_rate", "action_saturation"}:
    assert all(key in m for m in metrics), key


def test_a_run_directory_is_never_overwritten(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="never overwritten"):
    train(tiny(), tmp_path / "run", show_progress=False)
  assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"


class Interrupt(Exception):
  pass


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
  cfg = tiny(num_evals=5, seed=3)  # 4 chunks of 2 iterations
  whole = train(cfg, tmp_path / "whole", show_progress=False)
  assert (tmp_path / "whole" / PLOT_FILE).read_bytes()[:8] == PNG_MAGIC

  def stop_after_two_chunks(record):
    if record["env_steps"] == 2 * cfg.iterations_per_chunk * cfg.env_steps_per_iteration:
      raise Interrupt

  with pytest.raises(Interrupt):
    train(cfg, tmp_path / "cut", show_progress=False, progress_fn=stop_after_two_chunks)
  assert len(read_jsonl(tmp_path / "cut" / METRICS_FILE)) == 2 * cfg.iterations_per_chunk
  assert not (tmp_path / "cut" / PLOT_FILE).exists()  # drawn when a run ends
  resumed = train(cfg, tmp_path / "cut", resume=True, show_progress=False)
  assert (tmp_path / "cut" / PLOT_FILE).read_bytes()[:8] == PNG_MAGIC

  chex.assert_trees_all_equal(jax.device_get(resumed.state), jax.device_get(whole.state))
  for name in (METRICS_FILE, EVALS_FILE):
    a, b = read_jsonl(tmp_path / "whole" / name), read_jsonl(tmp_path / "cut" / name)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
      assert {k: v for k, v in x.items() if not is_timing(k)} == {
        k: v for k, v in y.items() if not is_timing(k)
      }
  for name, values in whole.metrics.items():
    if not is_timing(name):
      np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)


def test_load_policy_in_a_fresh_process(tmp_path):
  result = train(tiny(), tmp_path / "run", show_progress=False)
  obs = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
  expected = np.asarray(jax.jit(result.policy)(jnp.asarray(obs)))
  script = (
    "import sys, json, jax, numpy as np, ppo_jax\n"
    "policy = jax.jit(ppo_jax.load_policy(sys.argv[1]))\n"
    "obs = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)\n"
    "print(json.dumps(np.asarray(policy(obs)).tolist()))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", script, str(tmp_path / "run")],
    capture_output=True,
    text=True,
    check=True,
  )
  np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), expected, rtol=1e-6)
  sampled = load_policy(tmp_path / "run")(jnp.asarray(obs), jax.random.PRNGKey(0))
  assert sampled.shape == (3, 1) and not np.allclose(sampled, expected)
