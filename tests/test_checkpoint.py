"""Checkpoint round trips: every leaf back bit for bit, zero-size arrays included, and a
background save that keeps the state as it was when `save` returned."""

import chex
import jax
import jax.numpy as jnp
from tiny import compilations

from ppo_jax import checkpoint


def test_round_trip_keeps_every_leaf_including_zero_size_ones(tmp_path):
  state = {
    "params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.float32(0.5)},
    "act": jnp.zeros((4, 0)),  # MJX data of a model without activations
    "key": jax.random.PRNGKey(7),
    "iteration": jnp.int32(3),
  }
  checkpoints = checkpoint.Checkpointer(tmp_path, keep=2)
  assert checkpoints.restore_latest(state) is None
  for step in (1, 2, 3):
    checkpoints.save(step, jax.tree.map(lambda x, s=step: x + s, state), {"step": step})
  like = jax.tree.map(jnp.zeros_like, state)
  restored, host = checkpoints.restore_latest(like)
  chex.assert_trees_all_equal(restored, jax.tree.map(lambda x: x + 3, state))
  assert restored["act"].shape == (4, 0)
  assert host == {"step": 3}
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
    "2",
    "3",
  ]


def test_a_background_save_holds_the_state_of_its_call(tmp_path):
  # The next chunk takes the state's buffers (donation) and overwrites them while the save is
  # still being written: the checkpoint must still hold the values saved. `save` copies nothing
  # itself (and so compiles nothing): orbax has the arrays on the host before it returns
  # (checkpoint._host_copy says where in orbax's code).
  state = {"w": jnp.arange(1_000_000, dtype=jnp.float32), "b": jnp.ones((3, 5), jnp.int32)}
  expected = jax.device_get(state)
  checkpoints = checkpoint.Checkpointer(tmp_path, keep=2)
  jax.clear_caches()
  with compilations() as compiled:
    checkpoints.save(1, state, {"step": 1})
  assert compiled == []
  overwrite = jax.jit(lambda s: jax.tree.map(lambda x: x * 0 - 1, s), donate_argnums=0)
  state = jax.block_until_ready(overwrite(state))
  checkpoints.wait()
  restored, _ = checkpoint.Checkpointer(tmp_path, keep=2).restore_latest(state)
  chex.assert_trees_all_equal(restored, expected)
