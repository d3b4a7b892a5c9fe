"""The training step: compiled once, no host transfers, KL brakes on the device, learning."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import fresh, tiny

import envs
from experiments.presets import PRESETS
from ppo_jax import PPOConfig, logger, train
from ppo_jax.rollout import unroll
from ppo_jax.step import make_train_chunk, make_train_step
from ppo_jax.update import adapt_learning_rate


def assert_trees_equal(a, b):
  chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))


def test_chunk_compiles_once_and_never_transfers():
  cfg = tiny()
  env, networks, state = fresh(cfg)
  traces = []

  def counted(state):
    traces.append(1)  # runs only while tracing
    return make_train_chunk(cfg, env, networks)(state)

  chunk = jax.jit(counted, donate_argnums=0)
  state, _ = chunk(state)
  with jax.transfer_guard("disallow"):
    for _ in range(3):
      state, metrics = chunk(state)
  assert len(traces) == 1
  assert chunk._cache_size() == 1
  # Metrics come back stacked over the chunk's iterations, fetched in one call.
  metrics = jax.device_get(metrics)
  assert metrics["approx_kl"].shape == (cfg.iterations_per_chunk,)
  assert metrics["approx_kl_per_epoch"].shape == (
    cfg.iterations_per_chunk,
    cfg.num_updates_per_batch,
  )
  assert int(state.iteration) == 4 * cfg.iterations_per_chunk


def test_num_resets_per_eval_restarts_every_env_between_chunk_parts():
  """Two resets per chunk of 2 x 3 iterations: the env states leave the chunk fresh (every
  episode at step 0), while a chunk without resets leaves them mid-episode."""
  steps = tiny(num_timesteps=1, num_evals=2).env_steps_per_iteration * 6
  for resets, fresh_after in ((2, True), (0, False)):
    cfg = tiny(num_timesteps=steps, num_evals=2, num_resets_per_eval=resets)
    assert cfg.iterations_per_chunk == 6
    env, networks, state = fresh(cfg)
    state, metrics = jax.jit(make_train_chunk(cfg, env, networks))(state)
    assert metrics["approx_kl"].shape == (6,)
    assert int(state.iteration) == 6
    assert bool(jnp.all(state.env_state.steps == 0)) == fresh_after


def test_metrics_shapes_and_ranges():
  cfg = tiny(num_updates_per_batch=3)
  env, networks, state = fresh(cfg)
  state, metrics = jax.jit(make_train_step(cfg, env, networks))(state)
  metrics = jax.device_get(metrics)
  epochs = cfg.num_updates_per_batch
  for name in (
    "approx_kl",
    "approx_kl_k1",
    "exact_kl",
    "clip_fraction",
    "zero_gradient_fraction",
    "entropy",
    "action_std",
    "action_std_min",
    "explained_variance",
    "grad_norm",
    "policy_loss",
    "value_loss",
    "entropy_loss",
    "learning_rate",
  ):
    assert metrics[f"{name}_per_epoch"].shape == (epochs,), name
    assert np.isfinite(metrics[name]), name
  assert metrics["approx_kl"] >= 0 and metrics["exact_kl"] >= 0
  assert 0 <= metrics["clip_fraction"] <= 1
  assert metrics["action_std_min"] <= metrics["action_std"]
  assert metrics["minibatch_updates_applied"] == epochs * cfg.num_minibatches
  assert metrics["epochs_applied"] == epochs
  assert metrics["learning_rate"] == pytest.approx(cfg.learning_rate)
  # Every scalar lands in a TensorBoard section of its own kind.
  scalars = [name for name, value in metrics.items() if np.ndim(value) == 0]
  assert not [name for name in scalars if logger.tensorboard_tag(name).startswith("other/")]
  assert logger.tensorboard_tag("update_kl") == "update/update_kl"
  assert logger.tensorboard_tag("label/kl_spike") == "label/kl_spike"


def test_early_stop_skips_the_remaining_updates():
  # Observation statistics off: the first minibatch's ratio is then 1 (KL ~ 1e-12), so the
  # brake fires on the second one, whatever the number of epochs.
  def run(**overrides):
    cfg = tiny(normalize_observations=False, num_minibatches=8, batch_size=8, **overrides)
    env, networks, state = fresh(cfg)
    state, metrics = jax.jit(make_train_step(cfg, env, networks))(state)
    return state, jax.device_get(metrics)

  one_epoch, m1 = run(target_kl=1e-7, num_updates_per_batch=1)
  four_epochs, m4 = run(target_kl=1e-7, num_updates_per_batch=4)
  unbraked, m_free = run(target_kl=None, num_updates_per_batch=4)

  assert m1["minibatch_updates_applied"] == m4["minibatch_updates_applied"] == 1
  assert m4["epochs_applied"] == 1 and m_free["minibatch_updates_applied"] == 32
  # Nothing moved after the stop: three more epochs leave params and Adam state as they were.
  assert_trees_equal(four_epochs.params, one_epoch.params)
  assert_trees_equal(four_epochs.opt_state, one_epoch.opt_state)
  assert not np.allclose(
    jax.tree.leaves(unbraked.params)[0], jax.tree.leaves(four_epochs.params)[0]
  )
  assert np.all(m4["grad_norm_per_epoch"][1:] == 0)  # no gradient was even computed


def test_adaptive_learning_rate_rule():
  cfg = tiny(learning_rate_schedule="ADAPTIVE_KL", desired_kl=0.01, learning_rate=1e-3)
  lr = jnp.float32(1e-3)
  assert adapt_learning_rate(cfg, lr, jnp.float32(0.05)) == pytest.approx(1e-3 / 1.5)
  assert adapt_learning_rate(cfg, lr, jnp.float32(0.001)) == pytest.approx(1e-3 * 1.5)
  assert adapt_learning_rate(cfg, lr, jnp.float32(0.01)) == pytest.approx(1e-3)
  assert adapt_learning_rate(cfg, jnp.float32(1e-5), jnp.float32(1.0)) == pytest.approx(1e-5)
  assert adapt_learning_rate(cfg, jnp.float32(1e-2), jnp.float32(0.0)) == pytest.approx(1e-2)


def test_adaptive_learning_rate_moves_on_the_device():
  cfg = tiny(learning_rate_schedule="ADAPTIVE_KL", desired_kl=1e-4, learning_rate=1e-3)
  env, networks, state = fresh(cfg)
  state, metrics = jax.jit(make_train_chunk(cfg, env, networks))(state)
  rates = np.concatenate([[cfg.learning_rate], jax.device_get(metrics["learning_rate"])])
  steps = np.log(rates[1:] / rates[:-1]) / np.log(1.5)
  assert np.all(np.abs(steps - np.round(steps)) < 1e-3)  # whole powers of 1.5
  assert rates[-1] != cfg.learning_rate
  assert np.all(
    (rates >= cfg.learning_rate_schedule_min_lr * 0.999)
    & (rates <= cfg.learning_rate_schedule_max_lr * 1.001)
  )
  assert float(state.learning_rate) == pytest.approx(rates[-1])


def test_linear_schedule_decays_to_zero():
  cfg = tiny(learning_rate_schedule="LINEAR", num_evals=2)
  env, networks, state = fresh(cfg)
  _, metrics = jax.jit(make_train_chunk(cfg, env, networks))(state)
  rates = jax.device_get(metrics["learning_rate"])
  expected = cfg.learning_rate * (1 - np.arange(cfg.num_iterations) / cfg.num_iterations)
  np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_train_returns_per_iteration_metrics_and_a_jittable_policy():
  cfg = tiny()
  records = []
  result = train(cfg, progress_fn=records.append)
  assert len(records) == cfg.num_evals
  assert result.metrics["approx_kl"].shape == (cfg.num_iterations,)
  assert result.metrics["clip_fraction_per_epoch"].shape == (
    cfg.num_iterations,
    cfg.num_updates_per_batch,
  )
  np.testing.assert_array_equal(
    result.metrics["env_steps"], cfg.env_steps_per_iteration * np.arange(1, cfg.num_iterations + 1)
  )
  assert result.evals["eval/episode_return"].shape == (cfg.num_evals,)
  action = jax.jit(result.policy)(jnp.zeros((5, 4)))
  assert action.shape == (5, 1) and bool(jnp.all(jnp.abs(action) <= 1))
  sampled = result.policy(jnp.zeros((5, 4)), jax.random.PRNGKey(0))
  assert sampled.shape == (5, 1)


@pytest.mark.slow
def test_learns_cartpole_to_its_solved_threshold():
  cfg = PRESETS["cartpole_balance"]
  result = train(cfg, progress_fn=None)
  solved = envs.make(cfg.env).solved_threshold
  assert result.evals["eval/episode_return"].max() >= solved
  assert result.evals["eval/episode_return"][-1] >= solved


@pytest.mark.slow
def test_learns_brax_inverted_pendulum():
  result = train(PPOConfig(num_timesteps=1_500_000, num_evals=10), progress_fn=None)
  assert result.evals["eval/episode_return"][-1] >= 900


def test_rollout_keeps_the_final_observation_for_the_bootstrap():
  cfg = tiny(env="builtin/pendulum_swingup", episode_length=5, unroll_length=12)
  env, networks, state = fresh(cfg)
  _, transitions, stats = jax.jit(
    lambda s: unroll(env, networks, s.params.policy, s.normalizer, s.env_state, s.key, 12)
  )(state)
  transitions = jax.device_get(transitions)
  truncated = transitions.truncation[:, 0] > 0
  np.testing.assert_array_equal(np.flatnonzero(truncated), [4, 9])
  assert transitions.termination.sum() == 0
  for t in np.flatnonzero(truncated):
    # The next step starts a new episode from a reset observation; next_obs is where the
    # truncated episode really ended, continuing its own dynamics.
    assert not np.allclose(transitions.next_obs[t, 0], transitions.obs[t + 1, 0])
  for t in np.flatnonzero(~truncated[:-1]):
    np.testing.assert_array_equal(transitions.next_obs[t, 0], transitions.obs[t + 1, 0])
  assert int(stats.episodes) == 2 * cfg.num_envs and int(stats.truncations) == 2 * cfg.num_envs
