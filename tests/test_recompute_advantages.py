"""`recompute_advantages`: GAE on every minibatch of whole segments with the value network of
that moment (Brax's ppo.train), against the once-per-iteration GAE and a NumPy reference."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from test_gae import gae_reference
from tiny import first_rollout, run_steps, tiny

from ppo_jax.batch import make_batch, segments
from ppo_jax.step import make_loss


@functools.cache
def setup():
  """The config, its networks, the initial params, the normalizer, one rollout, its values of
  the observations and of the next observations [T, S], and its batch."""
  cfg = tiny(
    recompute_advantages=True,
    reward_scaling=3.0,
    bootstrap_on_timeout=True,  # a truncation bootstraps from the rollout's final value
    episode_length=16,  # truncations inside segments, besides terminations
  )
  networks, state, transitions, normalizer = first_rollout(cfg)
  values, next_values = (
    networks.value(state.params.value, normalizer, obs)
    for obs in (transitions.obs, transitions.next_obs)
  )
  batch = make_batch(cfg, networks, state.params.value, normalizer, transitions)
  minibatch = segments(transitions, values, next_values)
  return cfg, networks, state.params, normalizer, transitions, next_values, batch, minibatch


def loss_and_grad(cfg, networks, params, normalizer, data):
  loss_fn = make_loss(cfg, networks)
  (_, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
    params, normalizer, data, jax.random.PRNGKey(2)
  )
  return metrics, grads


def test_at_the_rollout_params_the_fresh_loss_is_the_iterations():
  cfg, networks, params, normalizer, transitions, _, batch, minibatch = setup()
  # Episodes end inside segments, both ways.
  assert transitions.termination.sum() > 0 and transitions.truncation.sum() > 0
  fresh_metrics, fresh_grads = loss_and_grad(cfg, networks, params, normalizer, minibatch)
  once = dataclasses.replace(cfg, recompute_advantages=False)
  metrics, grads = loss_and_grad(once, networks, params, normalizer, batch)
  for name in ("total_loss", "policy_loss", "value_loss", "explained_variance"):
    np.testing.assert_allclose(
      getattr(fresh_metrics, name), getattr(metrics, name), rtol=1e-5, atol=1e-6
    )
  # The advantages and targets carry no gradient: the gradients are the same too.
  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), fresh_grads, grads
  )


def test_the_fresh_advantages_follow_the_value_network():
  cfg, networks, params, normalizer, transitions, rollout_next, batch, minibatch = setup()
  moved = params.replace(value=jax.tree.map(lambda x: 1.5 * x + 0.01, params.value))
  metrics, _ = loss_and_grad(cfg, networks, moved, normalizer, minibatch)

  values, next_values = (
    np.asarray(networks.value(moved.value, normalizer, obs))
    for obs in (transitions.obs, transitions.next_obs)
  )
  # Where an episode ended, the final observation's value is the rollout network's.
  ended = np.maximum(transitions.termination, transitions.truncation) > 0
  next_values = np.where(ended, rollout_next, next_values)
  advantages, _ = gae_reference(
    transitions.reward * cfg.reward_scaling,
    values,
    next_values,
    transitions.termination,
    transitions.truncation,
    cfg.discounting,
    cfg.gae_lambda,
    cfg.bootstrap_on_timeout,
  )
  # Target = advantage + V, so the value loss 0.5 mean (V - target)^2 is 0.5 mean(A^2).
  np.testing.assert_allclose(metrics.value_loss, 0.5 * np.mean(advantages**2), rtol=1e-4)
  stale_value_loss = 0.5 * np.mean((values.ravel() - np.asarray(batch.target).ravel()) ** 2)
  assert abs(stale_value_loss - float(metrics.value_loss)) > 1e-3 * stale_value_loss


def test_training_with_fresh_advantages_applies_every_minibatch_update():
  cfg = tiny(recompute_advantages=True)
  states, metrics = run_steps(cfg, 3)
  assert np.isfinite(metrics["total_loss"]).all()
  np.testing.assert_array_equal(
    metrics["minibatch_updates_applied"], cfg.num_updates_per_batch * cfg.num_minibatches
  )
  moved = jax.tree.map(np.array_equal, states[0].params.value, states[-1].params.value)
  assert not all(jax.tree.leaves(moved))
