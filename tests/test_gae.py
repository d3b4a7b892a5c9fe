"""GAE against a plain NumPy loop, plus the invariants that pin down its done handling."""

import jax
import numpy as np
import pytest

from ppo_jax.gae import compute_gae

T, B = 17, 9


def gae_reference(
  rewards, values, next_values, terminations, truncations, gamma, lam, bootstrap_on_timeout=True
):
  """Backward loop over t, in float64, written straight from the docstring of compute_gae."""
  rewards, values, next_values, terminations, truncations = (
    np.asarray(x, np.float64) for x in (rewards, values, next_values, terminations, truncations)
  )
  advantages = np.zeros_like(rewards)
  next_advantage = np.zeros(rewards.shape[1:])
  for t in reversed(range(rewards.shape[0])):
    done = np.maximum(terminations[t], truncations[t])
    delta = rewards[t] + gamma * (1.0 - terminations[t]) * next_values[t] - values[t]
    if not bootstrap_on_timeout:
      delta = delta * (1.0 - truncations[t])
    next_advantage = delta + gamma * lam * (1.0 - done) * next_advantage
    advantages[t] = next_advantage
  return advantages, advantages + values


def random_rollout(seed, shape=(T, B), done_prob=0.1):
  """Float32 rollout data; terminations and truncations are 0/1 and never both set."""
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=shape).astype(np.float32)
  values = rng.normal(size=shape).astype(np.float32)
  next_values = rng.normal(size=shape).astype(np.float32)
  u = rng.uniform(size=shape)
  terminations = (u < done_prob).astype(np.float32)
  truncations = ((u >= done_prob) & (u < 2 * done_prob)).astype(np.float32)
  return rewards, values, next_values, terminations, truncations


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
  "gamma, lam", [(0.99, 0.95), (0.97, 0.95), (0.9, 0.0), (0.5, 0.7), (1.0, 1.0), (0.8, 1.0)]
)
def test_matches_numpy_reference(seed, gamma, lam):
  data = random_rollout(seed)
  assert data[3].sum() > 0 and data[4].sum() > 0  # both kinds of done are exercised
  advantages, targets = compute_gae(*data, gamma, lam)
  ref_advantages, ref_targets = gae_reference(*data, gamma, lam)
  np.testing.assert_allclose(advantages, ref_advantages, rtol=0, atol=1e-5)
  np.testing.assert_allclose(targets, ref_targets, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_without_bootstrap_on_timeout_matches_numpy_reference(seed):
  data = random_rollout(seed)
  advantages, targets = compute_gae(*data, 0.99, 0.95, bootstrap_on_timeout=False)
  ref_advantages, ref_targets = gae_reference(*data, 0.99, 0.95, bootstrap_on_timeout=False)
  np.testing.assert_allclose(advantages, ref_advantages, rtol=0, atol=1e-5)
  np.testing.assert_allclose(targets, ref_targets, rtol=0, atol=1e-5)
  truncated = data[4] > 0
  np.testing.assert_array_equal(np.asarray(advantages)[truncated], 0.0)


def test_without_bootstrap_on_timeout_targets_are_braxs():
  """Brax's GAE (its default, no bootstrap at a truncation) on one segment per column: its
  next values are the segment's own values and a bootstrap value at the end."""
  from brax.training.agents.ppo.losses import compute_gae as brax_gae

  rewards, values, _, terminations, truncations = random_rollout(4)
  bootstrap = np.random.default_rng(5).normal(size=B).astype(np.float32)
  next_values = np.concatenate([values[1:], bootstrap[None]])
  _, targets = compute_gae(
    rewards, values, next_values, terminations, truncations, 0.99, 0.95, False
  )
  brax_targets, _ = brax_gae(truncations, terminations, rewards, values, bootstrap, 0.95, 0.99)
  np.testing.assert_allclose(targets, brax_targets, rtol=0, atol=1e-5)


def test_jit_matches_numpy_reference():
  data = random_rollout(3)
  advantages, targets = jax.jit(compute_gae, static_argnums=(5, 6))(*data, 0.99, 0.95)
  ref_advantages, ref_targets = gae_reference(*data, 0.99, 0.95)
  np.testing.assert_allclose(advantages, ref_advantages, rtol=0, atol=1e-5)
  np.testing.assert_allclose(targets, ref_targets, rtol=0, atol=1e-5)


def test_no_dones_matches_reference_with_long_traces():
  rewards, values, next_values, _, _ = random_rollout(4)
  zeros = np.zeros_like(rewards)
  advantages, _ = compute_gae(rewards, values, next_values, zeros, zeros, 0.99, 0.95)
  ref_advantages, _ = gae_reference(rewards, values, next_values, zeros, zeros, 0.99, 0.95)
  np.testing.assert_allclose(advantages, ref_advantages, rtol=0, atol=1e-5)


@pytest.mark.parametrize("gamma", [0.9, 0.99, 1.0])
def test_lambda_zero_is_the_td_error(gamma):
  rewards, values, next_values, terminations, truncations = random_rollout(5)
  advantages, targets = compute_gae(
    rewards, values, next_values, terminations, truncations, gamma, 0.0
  )
  td_error = rewards + gamma * (1.0 - terminations) * next_values - values
  np.testing.assert_allclose(advantages, td_error, rtol=0, atol=1e-6)
  np.testing.assert_allclose(
    targets, rewards + gamma * (1.0 - terminations) * next_values, rtol=0, atol=1e-6
  )


def test_lambda_one_gamma_one_without_dones_is_reward_to_go_plus_bootstrap_minus_value():
  rng = np.random.default_rng(6)
  rewards = rng.normal(size=(T, B)).astype(np.float32)
  values = rng.normal(size=(T, B)).astype(np.float32)
  bootstrap = rng.normal(size=(B,)).astype(np.float32)
  # Consistent values: the next state's value is the following step's value, so the
  # deltas telescope and only the final bootstrap survives.
  next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
  zeros = np.zeros_like(rewards)
  advantages, targets = compute_gae(rewards, values, next_values, zeros, zeros, 1.0, 1.0)
  reward_to_go = np.cumsum(rewards[::-1].astype(np.float64), axis=0)[::-1]
  expected = reward_to_go + bootstrap[None].astype(np.float64) - values
  np.testing.assert_allclose(advantages, expected, rtol=0, atol=1e-5)
  np.testing.assert_allclose(targets, reward_to_go + bootstrap[None], rtol=0, atol=1e-5)


def _single_done(kind, t, b, seed=7):
  rewards, values, next_values, _, _ = random_rollout(seed)
  terminations = np.zeros_like(rewards)
  truncations = np.zeros_like(rewards)
  (terminations if kind == "termination" else truncations)[t, b] = 1.0
  return rewards, values, next_values, terminations, truncations


def test_truncation_bootstraps_from_next_values():
  t, b, gamma, lam, shift = 6, 2, 0.97, 0.95, 1.5
  rewards, values, next_values, terminations, truncations = _single_done("truncation", t, b)
  before, _ = compute_gae(rewards, values, next_values, terminations, truncations, gamma, lam)
  changed = next_values.copy()
  changed[t, b] += shift
  after, _ = compute_gae(rewards, values, changed, terminations, truncations, gamma, lam)
  before, after = np.asarray(before), np.asarray(after)
  np.testing.assert_allclose(after[t, b] - before[t, b], gamma * shift, rtol=1e-5)
  # Earlier steps of the same episode see it through the trace; nothing else moves.
  np.testing.assert_allclose(
    after[t - 1, b] - before[t - 1, b], gamma * lam * gamma * shift, rtol=1e-4
  )
  np.testing.assert_array_equal(after[t + 1 :], before[t + 1 :])
  np.testing.assert_array_equal(np.delete(after, b, axis=1), np.delete(before, b, axis=1))


def test_termination_does_not_bootstrap():
  t, b, gamma, lam = 6, 2, 0.97, 0.95
  rewards, values, next_values, terminations, truncations = _single_done("termination", t, b)
  before, before_targets = compute_gae(
    rewards, values, next_values, terminations, truncations, gamma, lam
  )
  changed = next_values.copy()
  changed[t, b] += 1.5
  after, after_targets = compute_gae(
    rewards, values, changed, terminations, truncations, gamma, lam
  )
  np.testing.assert_array_equal(after, before)
  np.testing.assert_array_equal(after_targets, before_targets)


@pytest.mark.parametrize("kind", ["termination", "truncation"])
def test_any_done_cuts_the_trace(kind):
  t, b, gamma, lam = 6, 2, 0.97, 0.95
  rewards, values, next_values, terminations, truncations = _single_done(kind, t, b)
  before, _ = compute_gae(rewards, values, next_values, terminations, truncations, gamma, lam)
  # The step after a done belongs to the next episode: nothing from it may leak back.
  changed = rewards.copy()
  changed[t + 1 :, b] += 3.0
  after, _ = compute_gae(changed, values, next_values, terminations, truncations, gamma, lam)
  before, after = np.asarray(before), np.asarray(after)
  np.testing.assert_array_equal(after[: t + 1, b], before[: t + 1, b])
  assert np.all(after[t + 1 :, b] != before[t + 1 :, b])


def test_output_shapes_are_time_major():
  data = random_rollout(8)
  advantages, targets = compute_gae(*data, 0.99, 0.95)
  assert advantages.shape == (T, B)
  assert targets.shape == (T, B)


@pytest.mark.parametrize("field", range(5))
def test_mismatched_shapes_raise(field):
  data = list(random_rollout(9))
  data[field] = data[field][:, :-1]
  with pytest.raises((AssertionError, ValueError)):
    compute_gae(*data, 0.99, 0.95)


def test_column_vector_next_values_raise():
  data = list(random_rollout(10))
  data[2] = data[2][..., None]  # [T, B, 1] next_values would broadcast to [T, B, B]
  with pytest.raises((AssertionError, ValueError)):
    compute_gae(*data, 0.99, 0.95)


def test_rank_one_inputs_raise():
  data = [x[:, 0] for x in random_rollout(11)]
  with pytest.raises((AssertionError, ValueError)):
    compute_gae(*data, 0.99, 0.95)
