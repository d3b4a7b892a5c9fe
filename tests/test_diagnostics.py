"""Trust-region diagnostics and the clipped surrogate: NumPy, a textbook case, invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax import diagnostics
from ppo_jax.losses import clipped_surrogate

# A small hand-computed case (eps = 0.2).
TEXTBOOK_RATIOS = [0.72, 0.93, 1.08, 1.31]
TEXTBOOK_ADVANTAGES = [0.6, -0.4, 0.8, 0.5]
TEXTBOOK_CLIPPED_TERMS = [0.432, -0.372, 0.864, 0.6]
TEXTBOOK_OLD_LOG_PROBS = [-0.9, -0.4, -1.2, -0.7]
TEXTBOOK_NEW_LOG_PROBS = [-0.7, -0.5, -0.8, -0.2]


def random_log_ratio(seed, shape=(64, 8), scale=0.3):
  return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


# NumPy references, in float64.


def approx_kl_reference(log_ratio):
  ratio = np.exp(np.float64(log_ratio))
  return np.mean((ratio - 1.0) - np.log(ratio))


def approx_kl_k1_reference(log_ratio):
  return np.mean(-np.float64(log_ratio))


def clip_fraction_reference(ratio, eps):
  return np.mean((ratio < 1.0 - eps) | (ratio > 1.0 + eps))


def zero_gradient_mask_reference(ratio, advantages, eps):
  return ((ratio > 1.0 + eps) & (advantages > 0)) | ((ratio < 1.0 - eps) & (advantages < 0))


def explained_variance_reference(predictions, targets):
  predictions, targets = np.float64(predictions), np.float64(targets)
  return 1.0 - np.var(targets - predictions) / np.var(targets)


def clipped_surrogate_reference(ratio, advantages, eps):
  ratio, advantages = np.float64(ratio), np.float64(advantages)
  return np.minimum(ratio * advantages, np.clip(ratio, 1.0 - eps, 1.0 + eps) * advantages)


# Against the references.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_approx_kl_matches_numpy(seed):
  log_ratio = random_log_ratio(seed)
  np.testing.assert_allclose(
    diagnostics.approx_kl(log_ratio), approx_kl_reference(log_ratio), rtol=1e-5, atol=1e-7
  )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_approx_kl_k1_matches_numpy(seed):
  log_ratio = random_log_ratio(seed)
  np.testing.assert_allclose(
    diagnostics.approx_kl_k1(log_ratio), approx_kl_k1_reference(log_ratio), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_clip_fraction_matches_numpy(eps):
  ratio = np.exp(random_log_ratio(4))
  expected = clip_fraction_reference(ratio, eps)
  assert 0.05 < expected < 0.95  # both sides of the band are exercised
  np.testing.assert_allclose(diagnostics.clip_fraction(ratio, eps), expected, rtol=1e-6)


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_zero_gradient_mask_matches_numpy(eps):
  rng = np.random.default_rng(5)
  ratio = np.exp(random_log_ratio(5))
  advantages = rng.normal(size=ratio.shape).astype(np.float32)
  mask = diagnostics.zero_gradient_mask(ratio, advantages, eps)
  expected = zero_gradient_mask_reference(ratio, advantages, eps)
  assert mask.shape == ratio.shape and mask.dtype == jnp.bool_
  assert expected.any() and not expected.all()
  np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_explained_variance_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  targets = rng.normal(size=(17, 9)).astype(np.float32)
  predictions = (0.7 * targets + 0.5 * rng.normal(size=targets.shape)).astype(np.float32)
  np.testing.assert_allclose(
    diagnostics.explained_variance(predictions, targets),
    explained_variance_reference(predictions, targets),
    rtol=1e-5,
  )


def test_explained_variance_special_cases():
  targets = np.random.default_rng(6).normal(size=(50,)).astype(np.float32)
  np.testing.assert_allclose(diagnostics.explained_variance(targets, targets), 1.0)
  constant_guess = np.full_like(targets, targets.mean())
  np.testing.assert_allclose(
    diagnostics.explained_variance(constant_guess, targets), 0.0, atol=1e-6
  )
  assert np.isnan(diagnostics.explained_variance(targets, np.ones_like(targets)))


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_clipped_surrogate_matches_numpy(eps):
  rng = np.random.default_rng(7)
  ratio = np.exp(random_log_ratio(7))
  advantages = rng.normal(size=ratio.shape).astype(np.float32)
  objective = clipped_surrogate(ratio, advantages, eps)
  assert objective.shape == ratio.shape
  np.testing.assert_allclose(
    objective, clipped_surrogate_reference(ratio, advantages, eps), rtol=1e-6, atol=1e-7
  )


# The textbook case.


def test_textbook_clipped_terms():
  terms = clipped_surrogate(jnp.array(TEXTBOOK_RATIOS), jnp.array(TEXTBOOK_ADVANTAGES), 0.2)
  np.testing.assert_allclose(terms, TEXTBOOK_CLIPPED_TERMS, rtol=0, atol=1e-6)


def test_textbook_approx_kl_and_clip_fraction():
  log_ratio = jnp.array(TEXTBOOK_NEW_LOG_PROBS) - jnp.array(TEXTBOOK_OLD_LOG_PROBS)
  assert round(float(diagnostics.approx_kl(log_ratio)), 3) == 0.067
  assert float(diagnostics.clip_fraction(jnp.exp(log_ratio), 0.2)) == 0.75


# Invariants.


def test_unit_ratio_gives_zero_kl_and_zero_clip_fraction():
  log_ratio = jnp.zeros((64, 8))
  assert float(diagnostics.approx_kl(log_ratio)) == 0.0
  assert float(diagnostics.approx_kl_k1(log_ratio)) == 0.0
  assert float(diagnostics.clip_fraction(jnp.exp(log_ratio), 0.2)) == 0.0
  advantages = jnp.asarray(np.random.default_rng(8).normal(size=(64, 8)), jnp.float32)
  assert not diagnostics.zero_gradient_mask(jnp.exp(log_ratio), advantages, 0.2).any()


def test_approx_kl_is_nonnegative_and_k1_can_be_negative():
  for seed in range(5):
    assert float(diagnostics.approx_kl(random_log_ratio(seed))) >= 0.0
  # k1 is only unbiased: a sample of mostly positive log-ratios makes it negative.
  assert float(diagnostics.approx_kl_k1(jnp.array([0.3, 0.2, -0.1]))) < 0.0


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_zero_gradient_mask_agrees_with_the_gradient(eps):
  # Offsets on a 0.05 grid never land on the band edges 1 +- eps.
  offsets = np.array([-0.45, -0.35, -0.25, -0.15, -0.05, 0.0, 0.05, 0.15, 0.25, 0.35, 0.45])
  ratio_grid, advantage_grid = np.meshgrid(1.0 + offsets, [-2.0, -0.5, -0.1, 0.3, 1.7])
  ratio = jnp.asarray(ratio_grid, jnp.float32).ravel()
  advantages = jnp.asarray(advantage_grid, jnp.float32).ravel()

  # The samples are independent, so the gradient of the sum is the per-sample derivative.
  grad = jax.grad(lambda r: jnp.sum(clipped_surrogate(r, advantages, eps)))(ratio)
  mask = np.asarray(diagnostics.zero_gradient_mask(ratio, advantages, eps))
  grad, advantages = np.asarray(grad), np.asarray(advantages)

  assert mask.any() and not mask.all()
  np.testing.assert_array_equal(grad[mask], 0.0)
  np.testing.assert_allclose(grad[~mask], advantages[~mask], rtol=1e-6)
