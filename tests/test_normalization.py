"""Running observation statistics against NumPy over the concatenated data."""

import jax
import numpy as np
import pytest

from ppo_jax import normalization

OBS_SIZE = 3


def random_batches(seed, leading_shapes):
  """Batches [*leading, OBS_SIZE] with a different offset and scale per feature."""
  rng = np.random.default_rng(seed)
  loc = np.array([5.0, -2.0, 0.0])
  scale = np.array([3.0, 0.5, 1.0])
  return [
    (loc + scale * rng.normal(size=(*leading, OBS_SIZE))).astype(np.float32)
    for leading in leading_shapes
  ]


def fold(batches):
  stats = normalization.init(OBS_SIZE)
  for batch in batches:
    stats = normalization.update(stats, batch)
  return stats


@pytest.mark.parametrize(
  "leading_shapes",
  [
    [(64,)],
    [(7,), (13,), (1,), (40,)],
    [(4, 5), (17, 3), (2,)],  # rollout-shaped [T, B, obs] batches are flattened
  ],
)
def test_update_matches_numpy_over_the_concatenation(leading_shapes):
  batches = random_batches(0, leading_shapes)
  data = np.concatenate([b.reshape(-1, OBS_SIZE) for b in batches]).astype(np.float64)
  stats = fold(batches)
  assert float(stats.count) == data.shape[0]
  np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=0, atol=1e-4)
  variance = np.asarray(stats.m2) / float(stats.count)
  np.testing.assert_allclose(variance, data.var(axis=0), rtol=0, atol=1e-4)
  np.testing.assert_allclose(stats.std, data.std(axis=0), rtol=0, atol=1e-4)


def test_update_is_jittable_and_order_independent():
  batches = random_batches(1, [(9,), (30,), (5,)])
  update = jax.jit(normalization.update)
  forward = normalization.init(OBS_SIZE)
  for batch in batches:
    forward = update(forward, batch)
  backward = fold(batches[::-1])
  np.testing.assert_allclose(forward.mean, backward.mean, rtol=0, atol=1e-5)
  np.testing.assert_allclose(forward.m2, backward.m2, rtol=1e-5)


def test_normalize_is_identity_before_any_update():
  stats = normalization.init(OBS_SIZE)
  obs = random_batches(2, [(6,)])[0]
  np.testing.assert_array_equal(normalization.normalize(stats, obs), obs)
  # Also beyond the clip: empty statistics (normalize_observations=False) must not touch
  # the observations at all.
  large = np.array([[50.0, -300.0, 11.0]], np.float32)
  np.testing.assert_array_equal(normalization.normalize(stats, large), large)


def test_normalize_standardizes_with_the_statistics():
  batches = random_batches(3, [(200,)])
  stats = fold(batches)
  obs = random_batches(4, [(10,)])[0]
  expected = (obs - np.asarray(stats.mean)) / np.asarray(stats.std)
  np.testing.assert_allclose(normalization.normalize(stats, obs), expected, rtol=1e-5, atol=1e-6)
  standardized = np.asarray(normalization.normalize(stats, batches[0]))
  np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(standardized.std(axis=0), 1.0, atol=1e-4)


@pytest.mark.parametrize("clip", [10.0, 2.0])
def test_normalize_clips(clip):
  stats = fold(random_batches(5, [(100,)]))
  far = np.asarray(stats.mean) + np.array([100.0, -100.0, 0.5]) * np.asarray(stats.std)
  normalized = np.asarray(normalization.normalize(stats, far[None].astype(np.float32), clip))
  np.testing.assert_allclose(normalized[0, :2], [clip, -clip])
  np.testing.assert_allclose(normalized[0, 2], 0.5, rtol=1e-4)
  assert np.all(np.abs(normalized) <= clip)


def test_constant_feature_gets_a_floored_std():
  data = np.ones((20, OBS_SIZE), np.float32)
  stats = fold([data])
  assert np.all(np.asarray(stats.std) > 0)
  np.testing.assert_array_equal(normalization.normalize(stats, data), 0.0)
