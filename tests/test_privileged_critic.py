"""experiments.privileged_critic: its Monte-Carlo returns against a NumPy loop."""

import numpy as np

from experiments.privileged_critic import discounted_returns


def test_discounted_returns_stop_at_every_episode_end():
  rng = np.random.default_rng(0)
  steps, envs, discount = 12, 3, 0.9
  reward = rng.normal(size=(steps, envs)).astype(np.float32)
  termination = (rng.random((steps, envs)) < 0.15).astype(np.float32)
  truncation = (rng.random((steps, envs)) < 0.1).astype(np.float32)
  expected = np.zeros((steps, envs))
  for b in range(envs):
    following = 0.0
    for t in reversed(range(steps)):
      following = (
        reward[t, b] + discount * (1 - termination[t, b]) * (1 - truncation[t, b]) * following
      )
      expected[t, b] = following
  got = discounted_returns(reward, termination, truncation, discount)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
