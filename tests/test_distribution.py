"""The diagonal Gaussian: log-density and entropy against SciPy, the exact KL against its
closed form and a Monte-Carlo estimate, sampling and mode."""

import jax
import numpy as np
import pytest
from scipy import stats

from ppo_jax.distribution import DiagonalGaussian, TanhGaussian


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


# The tanh-squashed Gaussian ("tanh_normal").


def squashed_log_density(y, mean, std):
  """log-density of y = tanh(u), u ~ N(mean, std^2), per dimension, by change of variables
  in float64: log N(arctanh(y)) - log(1 - y^2)."""
  y, mean, std = np.float64(y), np.float64(mean), np.float64(std)
  return stats.norm.logpdf(np.arctanh(y), mean, std) - np.log1p(-np.square(y))


def test_tanh_log_prob_is_the_density_of_the_squashed_action():
  rng = np.random.default_rng(5)
  mean = rng.normal(size=(6, 3)).astype(np.float32)
  std = rng.uniform(0.2, 1.5, size=(6, 3)).astype(np.float32)
  raw = (mean + std * rng.normal(size=mean.shape)).astype(np.float32)
  log_prob = TanhGaussian(mean, std).log_prob(raw)
  assert log_prob.shape == (6,)
  expected = squashed_log_density(np.tanh(np.float64(raw)), mean, std).sum(-1)
  np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-4)


def test_tanh_log_prob_stays_finite_where_tanh_rounds_to_the_bound():
  """At u = 12, float32 tanh(u) is exactly 1 and arctanh would give inf: the pre-tanh sample
  keeps the log-density finite and right (log(1 - tanh^2 u) = -2 log cosh u)."""
  raw = np.array([[12.0, -15.0]], np.float32)
  assert np.all(np.abs(np.tanh(raw)) == 1.0)
  mean, std = np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32)
  log_cosh = np.abs(np.float64(raw)) + np.log1p(np.exp(-2 * np.abs(np.float64(raw)))) - np.log(2)
  expected = (stats.norm.logpdf(np.float64(raw)) + 2 * log_cosh).sum(-1)
  np.testing.assert_allclose(TanhGaussian(mean, std).log_prob(raw), expected, rtol=1e-6)


def test_tanh_density_integrates_to_one():
  """exp(log_prob) over y in (-1, 1), by quadrature on the pre-tanh grid (dy = (1 - y^2) du)."""
  u = np.linspace(-12.0, 12.0, 200_001, dtype=np.float32)
  gaussian = TanhGaussian(
    np.full((u.size, 1), 0.7, np.float32), np.full((u.size, 1), 1.3, np.float32)
  )
  density = np.exp(np.float64(gaussian.log_prob(u[:, None])))
  dy = 1.0 - np.tanh(np.float64(u)) ** 2
  assert np.trapezoid(density * dy, np.float64(u)) == pytest.approx(1.0, abs=1e-4)


def test_tanh_kl_is_the_pre_tanh_kl_and_matches_monte_carlo_on_the_squashed_actions():
  rng = np.random.default_rng(8)
  old = TanhGaussian(
    np.array([[0.0, 0.8], [-0.5, 0.2]], np.float32), np.array([[0.6, 0.4], [1.0, 0.7]], np.float32)
  )
  new = TanhGaussian(
    np.array([[0.3, 0.5], [-0.2, 0.4]], np.float32), np.array([[0.8, 0.5], [0.7, 0.9]], np.float32)
  )
  kl = np.asarray(old.kl(new))
  gaussian_kl = DiagonalGaussian(old.mean, old.std).kl(DiagonalGaussian(new.mean, new.std))
  np.testing.assert_array_equal(kl, gaussian_kl)
  # KL(old || new) = E_{y ~ old}[log old(y) - log new(y)] over squashed samples y, with both
  # densities by change of variables from y alone (|y| < 1 - 1e-9 keeps arctanh finite).
  num_samples = 200_000
  u = np.float64(old.mean) + np.float64(old.std) * rng.standard_normal((num_samples, 2, 2))
  y = np.clip(np.tanh(u), -1 + 1e-9, 1 - 1e-9)
  log_ratio = (
    squashed_log_density(y, old.mean, old.std) - squashed_log_density(y, new.mean, new.std)
  ).sum(-1)
  estimate = log_ratio.mean(axis=0)
  standard_error = log_ratio.std(axis=0) / np.sqrt(num_samples)
  assert np.all(np.abs(kl - estimate) < 5 * standard_error + 1e-3), (kl, estimate)


def test_tanh_entropy_estimate_is_unbiased():
  """The mean of Brax's one-sample estimate over many keys against -E[log p(y)] by quadrature."""
  mean, std = np.array([0.4, -1.0], np.float32), np.array([0.9, 0.5], np.float32)
  squashed = TanhGaussian(mean, std)
  keys = jax.random.split(jax.random.PRNGKey(1), 50_000)
  estimates = np.asarray(jax.vmap(squashed.entropy)(keys))
  u = np.linspace(-10.0, 10.0, 400_001)
  expected = 0.0
  for m, s in zip(mean, std, strict=True):  # independent dimensions: the entropies add
    log_density = squashed_log_density(np.tanh(u), m, s)
    weight = stats.norm.pdf(u, m, s)  # E over y = E over u of the same function of tanh(u)
    expected += -np.trapezoid(weight * np.nan_to_num(log_density, neginf=0.0), u)
  standard_error = estimates.std() / np.sqrt(estimates.size)
  assert abs(estimates.mean() - expected) < 5 * standard_error, (estimates.mean(), expected)
  # Below the pre-tanh Gaussian's entropy: squashing into (-1, 1) only removes entropy.
  assert estimates.mean() < float(DiagonalGaussian(mean, std).entropy())
  with pytest.raises(ValueError, match="needs a key"):
    squashed.entropy()


def test_tanh_env_action_mode_and_saturation_bound():
  squashed = TanhGaussian(np.array([0.5, -3.0], np.float32), np.array([0.3, 1.0], np.float32))
  np.testing.assert_allclose(squashed.to_env(squashed.mode()), np.tanh([0.5, -3.0]), rtol=1e-6)
  np.testing.assert_array_equal(DiagonalGaussian.to_env(np.array([0.5, -3.0])), [0.5, -1.0])
  assert TanhGaussian.saturation_bound == 0.99 and DiagonalGaussian.saturation_bound == 1.0
