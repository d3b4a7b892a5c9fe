"""The seed panel (num_seeds, one vmapped program) and the PPO / TRPO comparison."""

from __future__ import annotations

import csv
import dataclasses

import jax
import numpy as np
import pytest
from tiny import tiny

from experiments import compare, tables
from experiments.presets import PRESETS
from ppo_jax import train


def test_panel_equals_separate_runs():
  cfg = tiny(num_seeds=2, seed=3)
  panel = train(cfg, show_progress=False)
  for i in range(2):
    alone = train(dataclasses.replace(cfg, num_seeds=1, seed=3 + i), show_progress=False)
    for name in ("update_kl", "value_loss", "episode_return", "clip_fraction"):
      np.testing.assert_allclose(
        panel.metrics[name][i], alone.metrics[name], rtol=1e-4, atol=1e-6, err_msg=name
      )
    np.testing.assert_allclose(
      panel.evals["eval/episode_return"][i], alone.evals["eval/episode_return"], rtol=1e-5
    )
    for got, want in zip(
      jax.tree.leaves(jax.tree.map(lambda x, i=i: x[i], panel.params)),
      jax.tree.leaves(alone.params),
      strict=True,
    ):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert panel.metrics["value_loss"].shape == (2, cfg.num_iterations)
  assert not np.allclose(panel.metrics["value_loss"][0], panel.metrics["value_loss"][1])


def test_panel_run_dir_has_a_record_per_seed_and_iteration(tmp_path):
  cfg = tiny(num_seeds=2, num_evals=2)
  train(cfg, tmp_path / "run", show_progress=False)
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2 * cfg.num_iterations
  assert (tmp_path / "run" / "largest_kl" / "seed_1" / "comparison.json").exists()


@pytest.mark.slow
def test_compare_writes_table_and_figure_on_a_tiny_budget(tmp_path, capsys):
  # The tiny config's sizes, as CLI overrides of the cartpole preset.
  small = tiny()
  settings = {
    name: ",".join(map(str, value)) if isinstance(value, tuple) else value
    for name in (
      "num_envs",
      "batch_size",
      "num_minibatches",
      "unroll_length",
      "num_updates_per_batch",
      "episode_length",
      "policy_hidden_layer_sizes",
      "value_hidden_layer_sizes",
      "num_evals",
      "num_eval_envs",
    )
    for value in [getattr(small, name)]
  }
  out = compare.main(
    ["--env", "cartpole_balance", "--seeds", "2", "--steps", "2048", "--out", str(tmp_path / "c")]
    + ["--set", *(f"{k}={v}" for k, v in settings.items())]
  )
  rows = list(csv.DictReader((out / "table.csv").open()))
  assert [r["algorithm"] for r in rows] == ["ppo", "trpo"]
  for row in rows:
    for name in ("final_return", "auc_return", "update_kl_max", "sps", "label_kl_spike"):
      assert np.isfinite(float(row[f"{name}_mean"])), name
    assert np.isfinite(float(row["final_return_ci95"]))  # two seeds give an interval
    assert int(float(row["env_steps_mean"])) == small.total_env_steps
  ppo, trpo = rows
  # Same settings (the built-in task has no TRPO preset): PPO's minibatch steps against
  # TRPO's whole-batch steps, at most one per iteration.
  assert float(ppo["policy_updates_mean"]) == (
    small.num_iterations * small.num_updates_per_batch * small.num_minibatches
  )
  assert float(ppo["samples_per_update_mean"]) == small.minibatch_size
  assert 0 < float(trpo["policy_updates_mean"]) <= small.num_iterations
  assert float(trpo["samples_per_update_mean"]) == small.num_segments * small.unroll_length
  table = (out / "table.md").read_text()
  assert table.startswith("| metric | ppo | trpo |") and "±" in table
  assert (out / "comparison.png").stat().st_size > 10_000
  assert (out / "trpo" / "metrics.jsonl").exists()
  assert "table.md" in capsys.readouterr().out


def test_each_algorithm_starts_from_its_own_preset_unless_told_otherwise():
  base = compare.base_config("brax/inverted_pendulum")
  assert base == PRESETS["brax_inverted_pendulum"]
  own = compare.for_algorithm(base, "trpo", 4, False, {"num_timesteps": 10**6})
  assert own == dataclasses.replace(
    PRESETS["brax_inverted_pendulum_trpo"], num_seeds=4, num_timesteps=10**6
  )
  same = compare.for_algorithm(base, "trpo", 4, True, {})
  assert same == dataclasses.replace(base, algorithm="trpo", num_seeds=4)
  assert compare.for_algorithm(base, "ppo", 2, False, {}) == dataclasses.replace(base, num_seeds=2)


def test_variants_are_runs_of_the_first_algorithm_with_their_own_overrides():
  parser = compare.build_parser()
  args = parser.parse_args(
    ["--env", "cartpole_balance", "--seeds", "3", "--set", "learning_rate=1e-2"]
    + [
      "--variants",
      "plain",
      "brake:target_kl=0.02,target_kl_factor=2",
      "backstop:max_update_kl=0.02",
    ]
  )
  configs = compare.build_configs(parser, args)
  base = dataclasses.replace(PRESETS["cartpole_balance"], learning_rate=1e-2, num_seeds=3)
  assert configs == {
    "plain": base,
    "brake": dataclasses.replace(base, target_kl=0.02, target_kl_factor=2),
    "backstop": dataclasses.replace(base, max_update_kl=0.02),
  }


def test_mean_and_interval_matches_the_t_formula():
  values = np.array([1.0, 2.0, 4.0, 7.0])
  mean, half = tables.mean_and_interval(values)
  assert mean == 3.5
  # t(0.975, 3) = 3.182446; sample std = 2.645751
  np.testing.assert_allclose(half, 3.182446 * 2.645751 / 2, rtol=1e-5)
  assert np.isnan(tables.mean_and_interval(np.array([5.0]))[1])
