"""Value loss against NumPy; the full PPO loss at ratio 1 and off-policy."""

import functools

import jax
import numpy as np
import pytest
from scipy import stats

from ppo_jax import PPOConfig, networks, normalization
from ppo_jax.losses import value_loss
from ppo_jax.step import make_loss
from ppo_jax.types import Batch

OBS_SIZE, ACTION_SIZE, NUM_SAMPLES = 4, 2, 64


def value_loss_reference(values, old_values, targets, eps):
  values, old_values, targets = (np.float64(x) for x in (values, old_values, targets))
  loss = (values - targets) ** 2
  if eps is not None:
    clipped = old_values + np.clip(values - old_values, -eps, eps)
    loss = np.maximum(loss, (clipped - targets) ** 2)
  return 0.5 * loss.mean()


def random_values(seed, n=256):
  rng = np.random.default_rng(seed)
  old_values = rng.normal(size=(n,)).astype(np.float32)
  values = (old_values + rng.normal(scale=0.5, size=(n,))).astype(np.float32)
  targets = rng.normal(size=(n,)).astype(np.float32)
  return values, old_values, targets


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("eps", [None, 0.1, 0.2, 1.0])
def test_value_loss_matches_numpy(seed, eps):
  values, old_values, targets = random_values(seed)
  np.testing.assert_allclose(
    value_loss(values, old_values, targets, eps),
    value_loss_reference(values, old_values, targets, eps),
    rtol=1e-5,
  )


def test_value_clipping_changes_the_loss_and_never_lowers_it():
  values, old_values, targets = random_values(2)
  unclipped = float(value_loss(values, old_values, targets, None))
  clipped = float(value_loss(values, old_values, targets, 0.1))
  assert clipped > unclipped
  # A clip wider than every update is the unclipped loss.
  np.testing.assert_allclose(value_loss(values, old_values, targets, 100.0), unclipped, rtol=1e-6)


def small_config(**overrides):
  """The per-sample loss (GAE once per iteration; `recompute_advantages` has its own tests)."""
  return PPOConfig(
    env="builtin/cartpole_balance",
    policy_hidden_layer_sizes=(16, 16),
    value_hidden_layer_sizes=(16, 16),
    recompute_advantages=False,
    **overrides,
  )


@functools.cache
def make_evaluate(cfg):
  """Returns a jitted (seed, log_prob_shift) -> (batch, values, loss, metrics) for `cfg`.

  The batch's behaviour policy is the current one, with its log-probabilities lowered by
  `log_prob_shift` (0 makes the ratio exactly 1). The observations go through a non-trivial
  normalizer. The random inputs come from NumPy and everything else is one compilation per
  config, which keeps the file fast on a shared CPU.
  """
  net = networks.make_actor_critic(cfg, OBS_SIZE, ACTION_SIZE)
  loss_fn = make_loss(cfg, net)

  @jax.jit
  def evaluate(key, seen, obs, noise, value, advantage, target, log_prob_shift):
    params = net.init(key)
    normalizer = normalization.update(normalization.init(OBS_SIZE), seen)
    distribution = net.policy(params.policy, normalizer, obs)
    action = distribution.mean + distribution.std * noise
    batch = Batch(
      obs=obs,
      action=action,
      log_prob=distribution.log_prob(action) - log_prob_shift,
      mean=distribution.mean,
      std=distribution.std,
      value=value,
      advantage=advantage,
      target=target,
    )
    values = net.value(params.value, normalizer, obs)
    loss, metrics = loss_fn(params, normalizer, batch, jax.random.fold_in(key, 1))
    return batch, values, loss, metrics

  def run(seed, log_prob_shift=0.0):
    rng = np.random.default_rng(seed)
    return evaluate(
      jax.random.PRNGKey(seed),
      (2.0 + 3.0 * rng.normal(size=(32, OBS_SIZE))).astype(np.float32),
      rng.normal(size=(NUM_SAMPLES, OBS_SIZE)).astype(np.float32),
      rng.normal(size=(NUM_SAMPLES, ACTION_SIZE)).astype(np.float32),
      rng.normal(size=(NUM_SAMPLES,)).astype(np.float32),
      (1.0 + 2.0 * rng.normal(size=(NUM_SAMPLES,))).astype(np.float32),
      rng.normal(size=(NUM_SAMPLES,)).astype(np.float32),
      np.float32(log_prob_shift),
    )

  return run


# Two configs cover both advantage modes and both std heads at two compilations.
@pytest.mark.parametrize("normalize_advantage, state_dependent_std", [(True, True), (False, False)])
def test_make_loss_at_ratio_one(normalize_advantage, state_dependent_std):
  cfg = small_config(
    normalize_advantage=normalize_advantage, state_dependent_std=state_dependent_std
  )
  batch, values, loss, metrics = make_evaluate(cfg)(seed=0)

  # Ratio 1: no divergence, nothing clipped, no gradient removed.
  np.testing.assert_allclose(metrics.approx_kl, 0.0, atol=1e-6)
  np.testing.assert_allclose(metrics.approx_kl_k1, 0.0, atol=1e-5)
  np.testing.assert_allclose(metrics.exact_kl, 0.0, atol=1e-6)
  assert float(metrics.clip_fraction) == 0.0
  assert float(metrics.zero_gradient_fraction) == 0.0

  # The surrogate is then the mean (normalized) advantage.
  advantages = np.float64(batch.advantage)
  if normalize_advantage:
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
  else:
    assert advantages.mean() > 0.5  # far from the normalized case's 0
  np.testing.assert_allclose(metrics.policy_loss, -advantages.mean(), rtol=1e-5, atol=1e-5)

  # The other terms, recomputed from the networks.
  assert values.shape == (NUM_SAMPLES,)
  expected_value_loss = value_loss_reference(values, batch.value, batch.target, None)
  np.testing.assert_allclose(metrics.value_loss, expected_value_loss, rtol=1e-5)
  expected_entropy = np.mean(stats.norm.entropy(scale=np.float64(batch.std)).sum(axis=-1))
  np.testing.assert_allclose(metrics.entropy, expected_entropy, rtol=1e-5)
  np.testing.assert_allclose(metrics.entropy_loss, -cfg.entropy_cost * expected_entropy, rtol=1e-5)
  np.testing.assert_allclose(
    loss,
    metrics.policy_loss + cfg.vf_loss_coefficient * metrics.value_loss + metrics.entropy_loss,
    rtol=1e-6,
    atol=1e-6,
  )
  np.testing.assert_allclose(metrics.total_loss, loss)
  np.testing.assert_allclose(metrics.action_std, np.mean(batch.std), rtol=1e-6)
  np.testing.assert_allclose(metrics.action_std_min, np.min(batch.std), rtol=1e-6)


def test_make_loss_sees_an_off_policy_batch():
  cfg = small_config()
  # A behaviour policy that was e^0.5 times less likely to pick each action: ratio e^0.5.
  batch, _, _, metrics = make_evaluate(cfg)(seed=1, log_prob_shift=0.5)
  np.testing.assert_allclose(metrics.approx_kl_k1, -0.5, rtol=1e-5)
  np.testing.assert_allclose(metrics.approx_kl, np.expm1(0.5) - 0.5, rtol=1e-5)
  # Same mean and std as the current policy: the exact KL sees no difference.
  np.testing.assert_allclose(metrics.exact_kl, 0.0, atol=1e-6)
  assert np.exp(0.5) > 1.0 + cfg.clipping_epsilon
  assert float(metrics.clip_fraction) == 1.0
  # Every sample is past the band on the high side: those with A > 0 lose their gradient.
  advantages = np.asarray(batch.advantage)
  normalized = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
  np.testing.assert_allclose(metrics.zero_gradient_fraction, np.mean(normalized > 0), rtol=1e-6)
