"""The side-by-side harness against Brax's own trainer: its pieces in seconds, a whole tiny
comparison (both trainers, two seeds) in the slow suite."""

from __future__ import annotations

import csv
import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.training.agents.ppo import train as brax_train
from jax.sharding import NamedSharding, PartitionSpec
from tiny import tiny

from experiments import presets, tables, versus_brax
from experiments.versus_brax import Curves


def test_device_put_replicated_stacks_one_copy_per_device():
  devices = jax.local_devices()
  tree = {"a": jnp.arange(3.0), "b": (jnp.ones((2, 2)), jnp.int32(7))}
  put = versus_brax.device_put_replicated(tree, devices)
  for original, copies in zip(jax.tree.leaves(tree), jax.tree.leaves(put), strict=True):
    assert copies.shape == (len(devices), *original.shape)
    assert isinstance(copies.sharding, NamedSharding)
    assert copies.sharding.spec == PartitionSpec("devices")
    for i in range(len(devices)):
      np.testing.assert_array_equal(copies[i], original)


def test_replicated_put_provides_the_function_only_inside_the_block():
  assert not hasattr(jax, "device_put_replicated")  # JAX 0.10 removed it
  with versus_brax.replicated_put():
    assert jax.device_put_replicated is versus_brax.device_put_replicated
  assert not hasattr(jax, "device_put_replicated")


def test_brax_gets_every_setting_under_its_own_keyword():
  cfg = tiny(clipping_epsilon_value=0.2, max_grad_norm=0.5, learning_rate_schedule="ADAPTIVE_KL")
  arguments = versus_brax.brax_arguments(cfg)
  keywords = inspect.signature(brax_train.train).parameters
  assert set(arguments) <= set(keywords)
  for name in ("num_envs", "batch_size", "unroll_length", "learning_rate", "discounting"):
    assert arguments[name] == getattr(cfg, name)
  assert arguments["learning_rate_schedule"] == "ADAPTIVE_KL"
  assert arguments["clipping_epsilon_value"] == 0.2 and arguments["max_grad_norm"] == 0.5
  networks = arguments["network_factory"].keywords
  assert networks["policy_hidden_layer_sizes"] == cfg.policy_hidden_layer_sizes
  assert networks["value_hidden_layer_sizes"] == cfg.value_hidden_layer_sizes


@pytest.mark.parametrize(
  "change", [{"target_kl": 0.02}, {"algorithm": "trpo"}, {"learning_rate_schedule": "LINEAR"}]
)
def test_settings_brax_lacks_are_refused_naming_the_field(change):
  with pytest.raises(ValueError, match=next(iter(change))):
    versus_brax.brax_arguments(dataclasses.replace(tiny(), **change))


def test_env_names_resolve_to_their_source():
  assert versus_brax.resolve_env("CartpoleBalance") == "playground/CartpoleBalance"
  assert versus_brax.resolve_env("inverted_pendulum") == "brax/inverted_pendulum"
  assert versus_brax.resolve_env("cartpole_balance") == "builtin/cartpole_balance"
  with pytest.raises(ValueError, match="did you mean 'CartpoleBalance'"):
    versus_brax.resolve_env("CartpoleBalanse")


def test_every_dm_control_task_gets_the_same_settings():
  # CartpoleBalance has a preset of its own; the comparison still uses the shared settings.
  assert any(c.env == "playground/CartpoleBalance" for c in presets.PRESETS.values())
  for name in ("CartpoleBalance", "PointMass"):
    assert versus_brax.base_config(f"playground/{name}") == presets.dm_control_cpu(name)
  assert versus_brax.base_config("brax/inverted_pendulum") == presets.PRESETS["default"]


def test_rows_compare_returns_at_the_evaluations_both_made():
  brax = Curves(np.array([0, 10, 20]), np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 7.0]]), 8.0)
  ours = Curves(np.array([0, 20]), np.array([[1.0, 5.0], [1.0, 9.0], [1.0, 10.0]]), 2.0)
  rows = versus_brax.curve_rows({"brax": brax, "ours": ours})
  assert [n for n in rows["brax"] if n.startswith("return")] == ["return_at_0", "return_at_20"]
  assert rows["brax"]["return_at_20"] == tables.mean_and_interval([3.0, 7.0])
  assert rows["ours"]["return_at_20"] == tables.mean_and_interval([5.0, 9.0, 10.0])
  assert rows["brax"]["sps"][0] == 2 * 20 / 8.0 and rows["ours"]["sps"][0] == 3 * 20 / 2.0
  summary = versus_brax.summary_row(rows)
  assert summary["env_steps"][0] == 20
  assert summary["ours_final_return"] == rows["ours"]["return_at_20"]
  assert summary["brax_wall_seconds"][0] == 8.0


def test_a_bad_setting_fails_before_anything_trains(tmp_path, capsys):
  with pytest.raises(SystemExit):
    versus_brax.main(["cartpole_balance", "--out", str(tmp_path / "v"), "--target_kl", "0.01"])
  assert "target_kl" in capsys.readouterr().err
  assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_both_trainers_on_a_tiny_budget(tmp_path):
  small = tiny()
  sizes = ("num_envs", "batch_size", "num_minibatches", "unroll_length", "num_updates_per_batch")
  sizes += ("episode_length", "num_evals", "num_eval_envs", "num_timesteps")
  options = [f"--{name}={getattr(small, name)}" for name in sizes] + [
    "--policy_hidden_layer_sizes=16,16",
    "--value_hidden_layer_sizes=16,16",
  ]
  out = versus_brax.main(
    ["cartpole_balance", "--seeds", "2", "--out", str(tmp_path / "v")] + options
  )
  rows = {
    r["trainer"]: r for r in csv.DictReader((out / "builtin_cartpole_balance" / "table.csv").open())
  }
  assert list(rows) == ["brax", "ours"]
  steps = [0, small.total_env_steps // 2, small.total_env_steps]
  for row in rows.values():
    for step in steps:
      assert np.isfinite(float(row[f"return_at_{step}_mean"]))
      assert np.isfinite(float(row[f"return_at_{step}_ci95"]))  # two seeds give an interval
    assert float(row["wall_seconds_mean"]) > 0
  summary = list(csv.DictReader((out / "table.csv").open()))
  assert [r["env"] for r in summary] == ["builtin/cartpole_balance"]
  assert (out / "comparison.png").stat().st_size > 10_000
  assert (out / "builtin_cartpole_balance" / "ours" / "metrics.jsonl").exists()


def test_brax_curves_are_reused_only_with_the_same_settings_and_seeds(tmp_path):
  cfg = tiny()
  curves = Curves(np.array([0, 10]), np.array([[1.0, 2.0], [3.0, 5.0]]), 8.0)
  path = tmp_path / "brax.json"
  path.write_text(versus_brax.brax_record(cfg, [0, 1], curves))
  loaded = versus_brax.load_brax(cfg, [0, 1], path)
  np.testing.assert_array_equal(loaded.steps, curves.steps)
  np.testing.assert_array_equal(loaded.returns, curves.returns)
  assert loaded.wall_seconds == 8.0
  # A setting Brax is not given does not matter to its curves.
  versus_brax.load_brax(dataclasses.replace(cfg, recompute_advantages=True), [0, 1], path)
  other = dataclasses.replace(cfg, learning_rate=1e-3)
  with pytest.raises(ValueError, match=r"learning_rate \(0.0003, here 0.001\)"):
    versus_brax.load_brax(other, [0, 1], path)
  with pytest.raises(ValueError, match=r"seeds \(\[0, 1\], here \[0, 2\]\)"):
    versus_brax.load_brax(cfg, [0, 2], path)
  with pytest.raises(ValueError, match="--brax_from: no"):
    versus_brax.load_brax(cfg, [0, 1], tmp_path / "missing.json")
