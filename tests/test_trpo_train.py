"""TRPO inside the training step: the KL bound holds for accepted steps, rejected steps keep
the policy (its input layer re-expressed under the iteration's statistics), and it learns a
built-in task."""

from __future__ import annotations

import dataclasses

import chex
import jax
import numpy as np
import pytest
from tiny import run_steps, tiny

from experiments.presets import PRESETS
from ppo_jax import train, trust_region


def check_steps(cfg, states, metrics):
  accepted = metrics["trpo/accepted"].astype(bool)
  for i, ok in enumerate(accepted):
    before, after = states[i].params, states[i + 1].params
    kept = trust_region.reexpress(
      before.policy, states[i].normalizer, states[i + 1].normalizer, cfg.policy_obs_key
    )
    if ok:
      assert metrics["trpo/kl"][i] <= cfg.trpo_max_kl
      assert metrics["trpo/improvement"][i] > 0
      assert 0 <= metrics["trpo/backtracks"][i] < cfg.trpo_max_backtracks
      assert not np.array_equal(jax.tree.leaves(before.policy)[0], jax.tree.leaves(after.policy)[0])
    else:  # the behaviour policy, as the new statistics express it (float rounding of the
      # first layer's rewrite apart: here eager, there fused into the step)
      chex.assert_trees_all_close(kept, after.policy, rtol=1e-6, atol=1e-7)
      assert metrics["trpo/kl"][i] == 0 and metrics["trpo/step_size"][i] == 0
    # The value network trains by minibatch epochs either way.
    assert not np.array_equal(jax.tree.leaves(before.value)[0], jax.tree.leaves(after.value)[0])
  return accepted


def test_accepted_steps_respect_the_kl_bound():
  cfg = tiny(algorithm="trpo", trpo_max_kl=0.01)
  states, metrics = run_steps(cfg, 6)
  accepted = check_steps(cfg, states, metrics)
  assert accepted.all()
  assert np.all(metrics["trpo/cg_residual"] < 1e-2)


def test_rejected_steps_leave_the_policy_unchanged():
  # One candidate only, at a bound so loose that the full natural-gradient step overshoots
  # the quadratic model: most are rejected (no surrogate improvement), some accepted.
  cfg = tiny(algorithm="trpo", trpo_max_kl=10.0, trpo_max_backtracks=1)
  states, metrics = run_steps(cfg, 8)
  accepted = check_steps(cfg, states, metrics)
  assert 0 < accepted.sum() < len(accepted)


@pytest.mark.slow  # ~1 min; `make test-slow`
def test_trpo_learns_cartpole():
  # 4 chunks of 4 iterations of 16,384 steps (the preset's 300k steps make 20 iterations).
  cfg = dataclasses.replace(
    PRESETS["cartpole_balance"], algorithm="trpo", num_timesteps=262_144, num_evals=5
  )
  assert cfg.num_iterations == 16
  result = train(cfg, show_progress=False)
  returns = result.evals["eval/episode_return"]
  assert returns.max() >= 475, returns
  assert result.metrics["trpo/accepted"].mean() > 0.5
