"""`trust_region`: the whole change of the policy from the behaviour policy (old parameters, old
statistics), the input layer re-expressed under new statistics, and the brakes that bound the
whole change: a shift of the observation statistics alone moves the policy beyond the bound,
and TRPO's line search and the backstop see it."""

from __future__ import annotations

import functools

import jax
import numpy as np
from tiny import first_rollout, run_steps, tiny

from ppo_jax import trpo, trust_region, update
from ppo_jax.batch import make_batch
from ppo_jax.normalization import RunningStatistics

MAX_KL = 0.01


@functools.cache
def setup():
  """A tiny TRPO config, its networks, the behaviour policy and statistics, a rollout's batch
  (taken under those statistics) and statistics that moved: every observation entry's mean by
  one of its std, and its std by a factor 1.5. The initial policy's weights are tripled, so
  that its mean action depends on the observation as a trained policy's does."""
  cfg = tiny(algorithm="trpo", trpo_max_kl=MAX_KL)
  networks, state, transitions, normalizer = first_rollout(cfg)
  params = state.params.replace(policy=jax.tree.map(lambda p: 3 * p, state.params.policy))
  batch = make_batch(cfg, networks, params.value, normalizer, transitions)
  # The rollout of first_rollout acted under the initial (empty) statistics; act again under
  # `normalizer`, so that it is the behaviour policy's.
  behaviour = networks.policy(params.policy, normalizer, batch.obs)
  batch = batch._replace(
    mean=behaviour.mean, std=behaviour.std, log_prob=behaviour.log_prob(batch.action)
  )
  moved = RunningStatistics(
    count=normalizer.count,
    mean=normalizer.mean + normalizer.std,
    m2=normalizer.m2 * 1.5**2,
  )
  return cfg, networks, params, normalizer, moved, batch


def kl(networks, policy, normalizer, batch) -> float:
  return float(trust_region.update_kl(networks, policy, normalizer, batch))


def test_update_kl_is_the_mean_closed_form_kl_from_the_behaviour_policy():
  _, networks, params, normalizer, moved, batch = setup()
  new = networks.policy(params.policy, moved, batch.obs)
  m0, s0 = np.float64(batch.mean), np.float64(batch.std)
  m1, s1 = np.float64(new.mean), np.float64(new.std)
  per_sample = np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5, axis=-1)
  assert kl(networks, params.policy, normalizer, batch) < 1e-6  # the behaviour policy itself
  np.testing.assert_allclose(
    kl(networks, params.policy, moved, batch), np.mean(per_sample), rtol=1e-4
  )


def test_reexpressed_parameters_compute_the_old_policy_under_the_new_statistics():
  cfg, networks, params, normalizer, moved, batch = setup()
  policy = trust_region.reexpress(params.policy, normalizer, moved, cfg.policy_obs_key)
  old = networks.policy(params.policy, normalizer, batch.obs)
  again = networks.policy(policy, moved, batch.obs)
  # Both standardizations are within the clip for these observations ...
  for stats in (normalizer, moved):
    z = (np.asarray(batch.obs) - np.asarray(stats.mean)) / np.asarray(stats.std)
    assert np.all(np.abs(z) < 10)
  # ... so the policy is the same up to float32 rounding of the rewritten first layer.
  np.testing.assert_allclose(again.mean, old.mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(again.std, old.std, rtol=1e-4, atol=1e-5)
  # NumPy reference of the rewritten layer: W' = sigma'/sigma W, b' = b + (mu' - mu)/sigma W.
  layer = params.policy["params"]["MLP_0"]["Dense_0"]
  w, b = np.float64(layer["kernel"]), np.float64(layer["bias"])
  mu, sigma = np.float64(normalizer.mean), np.float64(normalizer.std)
  mu1, sigma1 = np.float64(moved.mean), np.float64(moved.std)
  rewritten = policy["params"]["MLP_0"]["Dense_0"]
  np.testing.assert_allclose(rewritten["kernel"], (sigma1 / sigma)[:, None] * w, rtol=1e-6)
  np.testing.assert_allclose(rewritten["bias"], b + ((mu1 - mu) / sigma) @ w, rtol=1e-5, atol=1e-6)
  # Every other parameter is untouched.
  rest = lambda p: {k: v for k, v in p["params"].items() if k != "MLP_0"}  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, rest(policy), rest(params.policy))


def test_a_statistics_shift_alone_is_beyond_the_bound_and_trpo_rejects_its_steps():
  cfg, networks, params, normalizer, moved, batch = setup()
  assert kl(networks, params.policy, moved, batch) > 10 * MAX_KL  # the shift alone
  step = functools.partial(
    trpo.policy_step,
    networks=networks,
    normalize_advantage=True,
    max_kl=MAX_KL,
    cg_iterations=10,
    cg_damping=0.1,
    max_backtracks=10,
    backtrack_coef=0.5,
  )
  # Not re-expressed: every step along the natural gradient is beyond the bound; the line
  # search (which before measured the KL from the old parameters under the new statistics,
  # 0 at the start) rejects them all, and the parameters stay.
  stepped, metrics = jax.jit(step)(params, moved, batch)
  assert not bool(metrics["trpo/accepted"])
  jax.tree.map(np.testing.assert_array_equal, stepped.policy, params.policy)
  # Re-expressed: the shift's share is gone, and the accepted step keeps the whole change,
  # measured from the behaviour policy, within the bound.
  reexpressed = params.replace(
    policy=trust_region.reexpress(params.policy, normalizer, moved, cfg.policy_obs_key)
  )
  assert kl(networks, reexpressed.policy, moved, batch) < 1e-4 * MAX_KL
  stepped, metrics = jax.jit(step)(reexpressed, moved, batch)
  assert bool(metrics["trpo/accepted"])
  whole = kl(networks, stepped.policy, moved, batch)
  assert 0 < whole <= MAX_KL
  np.testing.assert_allclose(float(metrics["trpo/kl"]), whole, rtol=1e-5)


def test_the_backstop_pulls_back_to_the_bound_on_the_whole_change():
  cfg, networks, params, normalizer, moved, batch = setup()
  cfg = tiny(max_update_kl=MAX_KL)
  backstop = jax.jit(functools.partial(update.backstop, cfg, networks))
  # An update that, with the statistics' shift, is beyond the bound; the shift alone too.
  new = jax.tree.map(lambda p: p * 1.05, params.policy)
  assert kl(networks, params.policy, moved, batch) > MAX_KL
  policy, metrics = backstop(params.policy, new, moved, batch)
  assert float(metrics["backstop_fraction"]) == 0.0  # no pull-back undoes the shift
  # From the re-expressed behaviour policy, pulled back along the update to within the bound.
  old = trust_region.reexpress(params.policy, normalizer, moved, cfg.policy_obs_key)
  new = jax.tree.map(lambda o, p: o + 0.05 * p, old, params.policy)
  assert kl(networks, new, moved, batch) > MAX_KL
  policy, metrics = backstop(old, new, moved, batch)
  fraction = float(metrics["backstop_fraction"])
  assert 0 < fraction < 1
  assert kl(networks, policy, moved, batch) <= MAX_KL


def test_the_train_step_bounds_the_whole_change_of_every_trpo_iteration():
  """Three TRPO iterations of the tiny config: update_kl, the whole change, within the bound."""
  _, metrics = run_steps(setup()[0], 3)
  assert np.all(metrics["update_kl"] <= MAX_KL * (1 + 1e-5)), metrics["update_kl"]
  assert np.all(metrics["trpo/accepted"] == 1)
  np.testing.assert_allclose(metrics["trpo/kl"], metrics["update_kl"], rtol=1e-4, atol=1e-7)
