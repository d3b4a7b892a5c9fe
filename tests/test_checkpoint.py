"""Checkpoint round trips: every leaf back bit for bit, zero-size arrays included."""

import chex
import jax
import jax.numpy as jnp

from ppo_jax import checkpoint


def test_round_trip_keeps_every_leaf_including_zero_size_ones(tmp_path):
  state = {
    "params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.float32(0.5)},
    "act": jnp.zeros((4, 0)),  # MJX data of a model without activations
    "key": jax.random.PRNGKey(7),
    "iteration": jnp.int32(3),
  }
  mngr = checkpoint.manager(tmp_path, keep=2)
  assert checkpoint.restore_latest(mngr, state) is None
  for step in (1, 2, 3):
    checkpoint.save(mngr, step, jax.tree.map(lambda x, s=step: x + s, state), {"step": step})
  like = jax.tree.map(jnp.zeros_like, state)
  restored, host = checkpoint.restore_latest(mngr, like)
  chex.assert_trees_all_equal(restored, jax.tree.map(lambda x: x + 3, state))
  assert restored["act"].shape == (4, 0)
  assert host == {"step": 3}
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
    "2",
    "3",
  ]
