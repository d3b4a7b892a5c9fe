"""The trust-region backstop (`max_update_kl`): an update over the bound ends within it, or
leaves the policy bitwise as it was."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest
from tiny import first_rollout, run_steps, tiny

from ppo_jax import trust_region, update
from ppo_jax.batch import make_batch


@functools.cache
def setup():
  """A tiny config, its networks, initial policy, normalizer and one rollout's batch."""
  cfg = tiny(max_update_kl=0.01, max_update_kl_backtracks=4)
  networks, state, transitions, normalizer = first_rollout(cfg)
  batch = make_batch(cfg, networks, state.params.value, normalizer, transitions)
  return cfg, networks, state.params.policy, normalizer, batch


def update_kl(networks, policy, normalizer, batch):
  return float(trust_region.update_kl(networks, policy, normalizer, batch))


@pytest.mark.parametrize("scale", [1e-4, 0.1, 0.3, 30.0])
def test_an_update_over_the_bound_ends_within_it_or_is_rejected(scale):
  cfg, networks, old, normalizer, batch = setup()
  leaves, tree = jax.tree.flatten(old)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  new = jax.tree.unflatten(
    tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  )
  policy, metrics = jax.jit(functools.partial(update.backstop, cfg, networks))(
    old, new, normalizer, batch
  )
  fraction, steps = float(metrics["backstop_fraction"]), int(metrics["backstop_steps"])
  before, after = (update_kl(networks, p, normalizer, batch) for p in (new, policy))
  if before <= cfg.max_update_kl:  # within the bound: the update stands, bitwise
    assert scale == 1e-4
    assert (fraction, steps) == (1.0, 0)
    jax.tree.map(np.testing.assert_array_equal, policy, new)
  elif fraction > 0:  # pulled back along the update to the first halving within the bound
    assert scale in (0.1, 0.3)
    assert 1 <= steps <= cfg.max_update_kl_backtracks and fraction == 0.5**steps
    assert after <= cfg.max_update_kl
    pulled = jax.tree.map(lambda o, n: o + fraction * (n - o), old, new)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), policy, pulled
    )
    larger = jax.tree.map(lambda o, n: o + 2 * fraction * (n - o), old, new)
    assert update_kl(networks, larger, normalizer, batch) > cfg.max_update_kl
  else:  # no halving is within the bound: rejected, the old policy bitwise
    assert scale == 30.0
    assert steps == cfg.max_update_kl_backtracks
    jax.tree.map(np.testing.assert_array_equal, policy, old)


def test_training_never_keeps_an_update_over_the_bound():
  """The monitor's aggressive settings on the tiny config: each iteration's update KL is
  within the bound, or the policy is bitwise the one before it."""
  cfg = tiny(learning_rate=1e-2, num_updates_per_batch=16, max_update_kl=0.005)
  states, metrics = run_steps(cfg, 6)
  assert metrics["backstop_fraction"].min() < 1.0  # the backstop acted
  for i in range(6):
    unchanged = all(
      np.array_equal(a, b)
      for a, b in zip(
        jax.tree.leaves(states[i].params.policy),
        jax.tree.leaves(states[i + 1].params.policy),
        strict=True,
      )
    )
    assert metrics["update_kl"][i] <= cfg.max_update_kl or unchanged, i
    assert unchanged == (metrics["backstop_fraction"][i] == 0.0), i
  plain = dataclasses.replace(cfg, max_update_kl=None)
  _, wild = run_steps(plain, 6)
  assert wild["update_kl"].max() > cfg.max_update_kl  # without it, the bound is crossed
  assert "backstop_fraction" not in wild


def test_max_update_kl_is_refused_with_trpo():
  with pytest.raises(ValueError, match="max_update_kl"):
    tiny(algorithm="trpo", max_update_kl=0.01)
