"""The diagonal Gaussian: log-density and entropy against SciPy, the exact KL against its
closed form and a Monte-Carlo estimate, sampling and mode."""

import jax
import numpy as np
import pytest
from scipy import stats

from ppo_jax.distribution import DiagonalGaussian


def random_gaussians(seed, shape=(32, 3)):
  """Two random Gaussians of the same shape, (old, new)."""
  rng = np.random.default_rng(seed)
  mean_old, mean_new = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
  std_old, std_new = (rng.uniform(0.2, 2.0, size=shape).astype(np.float32) for _ in range(2))
  return DiagonalGaussian(mean_old, std_old), DiagonalGaussian(mean_new, std_new)


def kl_reference(old: DiagonalGaussian, new: DiagonalGaussian):
  """KL(old || new) in float64, summed over the last axis."""
  mean_old, std_old, mean_new, std_new = (
    np.float64(x) for x in (old.mean, old.std, new.mean, new.std)
  )
  variance_ratio = (std_old / std_new) ** 2
  per_dim = 0.5 * (
    variance_ratio + (mean_new - mean_old) ** 2 / std_new**2 - 1.0 - np.log(variance_ratio)
  )
  return per_dim.sum(axis=-1)


def test_log_prob_matches_scipy():
  rng = np.random.default_rng(3)
  mean = rng.normal(size=(5, 7, 3)).astype(np.float32)
  std = rng.uniform(0.1, 2.0, size=(5, 7, 3)).astype(np.float32)
  action = (mean + std * rng.normal(size=mean.shape) * 2.0).astype(np.float32)
  log_prob = DiagonalGaussian(mean, std).log_prob(action)
  assert log_prob.shape == (5, 7)
  expected = stats.norm.logpdf(np.float64(action), np.float64(mean), np.float64(std)).sum(-1)
  np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-5)


def test_entropy_matches_scipy():
  std = np.random.default_rng(4).uniform(0.05, 3.0, size=(6, 4)).astype(np.float32)
  entropy = DiagonalGaussian(np.zeros_like(std), std).entropy()
  assert entropy.shape == (6,)
  expected = stats.norm.entropy(scale=np.float64(std)).sum(-1)
  np.testing.assert_allclose(entropy, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_matches_closed_form(seed):
  old, new = random_gaussians(seed)
  kl = old.kl(new)
  assert kl.shape == (32,)
  np.testing.assert_allclose(kl, kl_reference(old, new), rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(kl) > 0.0)  # distinct random distributions are strictly apart


def test_kl_matches_monte_carlo():
  rng = np.random.default_rng(3)
  old = DiagonalGaussian(
    np.array([[0.0, 0.5], [1.0, -0.3], [-0.2, 0.1]], np.float32),
    np.array([[1.0, 0.6], [0.8, 1.2], [0.5, 0.7]], np.float32),
  )
  new = DiagonalGaussian(
    np.array([[0.3, 0.2], [0.6, 0.1], [-0.1, 0.5]], np.float32),
    np.array([[1.2, 0.5], [0.9, 1.0], [0.6, 0.9]], np.float32),
  )
  num_samples = 200_000
  # KL(old || new) = E_{x ~ old}[log old(x) - log new(x)], with the action axis summed.
  x = old.mean + old.std * rng.standard_normal((num_samples, *old.mean.shape))
  log_ratio = (
    stats.norm.logpdf(x, old.mean, old.std) - stats.norm.logpdf(x, new.mean, new.std)
  ).sum(axis=-1)
  estimate = log_ratio.mean(axis=0)
  standard_error = log_ratio.std(axis=0) / np.sqrt(num_samples)
  kl = np.asarray(old.kl(new))
  assert np.all(np.abs(kl - estimate) < 5 * standard_error + 1e-3), (kl, estimate)


def test_kl_of_identical_distributions_is_zero():
  old, _ = random_gaussians(9)
  np.testing.assert_allclose(old.kl(old), 0.0, atol=1e-6)


def test_samples_have_the_mean_and_std_and_the_mode_is_the_mean():
  gaussian = DiagonalGaussian(np.array([0.5, -2.0], np.float32), np.array([0.3, 1.5], np.float32))
  keys = jax.random.split(jax.random.PRNGKey(0), 20_000)
  samples = np.asarray(jax.vmap(gaussian.sample)(keys))
  assert samples.shape == (20_000, 2)
  np.testing.assert_allclose(samples.mean(axis=0), gaussian.mean, atol=0.03)
  np.testing.assert_allclose(samples.std(axis=0), gaussian.std, rtol=0.03)
  np.testing.assert_array_equal(gaussian.mode(), gaussian.mean)
