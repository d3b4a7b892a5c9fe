"""experiments.randomized_vs_fixed: its statistics, its refusals and a tiny comparison."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from experiments import randomized_vs_fixed


def test_worst_mean_averages_each_seeds_lowest_tenth():
  rng = np.random.default_rng(0)
  returns = rng.normal(size=(3, 25))
  expected = [np.mean(sorted(row)[:2]) for row in returns]  # 10% of 25, rounded: 2 episodes
  np.testing.assert_allclose(randomized_vs_fixed.worst_mean(returns), expected)
  np.testing.assert_allclose(randomized_vs_fixed.worst_mean(returns[:, :4]), returns[:, :4].min(1))


@pytest.mark.parametrize(
  "argv, message",
  [
    (["cartpole_balance"], "has no randomization"),
    (["cartpole_randomized", "--seeds", "0"], r"--seeds \(0\) must be >= 1"),
    (["no_such_preset"], "unknown preset"),
  ],
)
def test_refuses_before_training(argv, message, capsys, tmp_path):
  with pytest.raises(SystemExit):
    randomized_vs_fixed.main([*argv, "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert re.search(message, err), err
  assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~2 min: two panels and their evaluations
def test_a_tiny_comparison_writes_its_table(tmp_path):
  out = randomized_vs_fixed.main(
    [
      "cartpole_randomized",
      *("--seeds", "2", "--episodes", "8", "--num_timesteps", "8192", "--num_envs", "16"),
      *("--batch_size", "16", "--unroll_length", "16", "--num_minibatches", "2"),
      *("--num_evals", "2", "--out", str(tmp_path / "out")),
    ]
  )
  with (out / "table.csv").open() as f:
    rows = {row["condition"]: row for row in csv.DictReader(f)}
  assert set(rows) == {"trained randomized", "trained fixed"}
  for row in rows.values():
    for metric in ("return on nominal envs", "return on randomized envs"):
      assert np.isfinite(float(row[f"{metric}_mean"])), row
  returns = json.loads((out / "returns.json").read_text())
  fixed = np.array(returns["trained fixed"]["randomized"])
  assert fixed.shape == (2, 8)
  # The randomized evaluation envs differ from the nominal one, for both conditions alike.
  assert not np.allclose(fixed, returns["trained fixed"]["nominal"])
  force = np.array(returns["randomized env params"]["force_mag"])
  assert force.shape == (8,) and len(np.unique(force)) == 8
