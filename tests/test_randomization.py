"""Domain randomization: per-env system parameters drawn from the run's key, kept in the env
state through resets, checkpoints and resume, and shown in the evaluation trace."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import fresh, tiny, whole_and_resumed

import envs
from envs import randomization
from experiments import evaluate
from ppo_jax import PPOConfig, checkpoint
from ppo_jax.step import make_train_step

RANDOMIZED = dict(randomization="cartpole")


def test_each_env_gets_its_own_parameters_and_the_seed_fixes_them():
  _, _, state = fresh(tiny(**RANDOMIZED))
  _, _, same = fresh(tiny(**RANDOMIZED))
  _, _, other = fresh(tiny(**RANDOMIZED, seed=1))
  params = state.env_state.params
  assert set(params) == {"pole_mass", "half_length", "cart_mass", "force_mag"}
  for name, values in params.items():
    assert values.shape == (tiny().num_envs,)
    assert len(np.unique(values)) == tiny().num_envs, name  # every env differs
    np.testing.assert_array_equal(values, same.env_state.params[name])
    assert not np.any(values == other.env_state.params[name]), name
  np.testing.assert_allclose(params["pole_mass"] / 0.1, np.clip(params["pole_mass"] / 0.1, 0.5, 2))


def test_without_a_randomization_the_state_holds_no_parameters():
  _, _, state = fresh(tiny())
  assert state.env_state.params == {}


def test_the_parameters_change_the_dynamics_and_survive_the_auto_reset():
  env = envs.make(
    "builtin/cartpole_balance", episode_length=3, randomization_fn=randomization.cartpole
  )
  params = env.randomize(jax.random.PRNGKey(0), 2)
  one_state = jax.vmap(env.reset)(jnp.stack([jax.random.PRNGKey(5)] * 2), params)
  step = jax.jit(jax.vmap(env.step))
  state = step(one_state, jnp.ones((2, 1)))
  # The same start and action, different masses and lengths: different next states.
  assert not np.allclose(state.obs[0], state.obs[1])
  for _ in range(2):  # the time limit resets both envs; their parameters stay
    state = step(state, jnp.ones((2, 1)))
  assert np.all(state.truncation == 1.0) and np.all(state.steps == 0)
  chex.assert_trees_all_equal(state.params, params)


def test_a_randomization_name_must_be_registered():
  with pytest.raises(ValueError, match=r"randomization \('nope'\) must be a name in"):
    tiny(randomization="nope")
  assert PPOConfig(env="builtin/cartpole_balance", randomization="cartpole").randomization


def test_in_axes_other_than_zero_are_refused():
  def batched_last(sys, rng):
    return sys.replace(pole_mass=jnp.ones((2,))), jax.tree.map(lambda _: None, sys).replace(
      pole_mass=1
    )

  env = envs.make("builtin/cartpole_balance", randomization_fn=batched_last)
  with pytest.raises(ValueError, match="in_axes must be 0 or None"):
    env.randomize(jax.random.PRNGKey(0), 2)


@pytest.mark.slow  # ~17 s: Brax's import and the ant's MJX model
def test_brax_ant_randomization_moves_friction_masses_and_gains():
  with jax.numpy_rank_promotion("allow"):  # MJX relies on rank promotion
    env = envs.make("brax/ant", backend="mjx", randomization_fn=randomization.brax_ant)
    params = env.randomize(jax.random.PRNGKey(0), 4)
  sys = randomization.system(env.core)
  assert set(params) == {"geom_friction", "body_mass", "actuator_gainprm", "actuator_biasprm"}
  assert params["body_mass"].shape == (4, *sys.body_mass.shape)
  ratio = np.asarray(params["body_mass"])[:, 1:] / np.asarray(sys.body_mass)[1:]
  assert np.all((ratio >= 0.8) & (ratio <= 1.2)) and len(np.unique(ratio)) == ratio.size
  friction = np.asarray(params["geom_friction"])[:, :, 0]
  assert np.all((friction >= 0.6) & (friction <= 1.4)) and len(np.unique(friction[:, 0])) == 4


def _randomized_reacher():
  env = envs.make("brax/reacher", backend="positional", randomization_fn=randomization.brax_reacher)
  return env, env.randomize(jax.random.PRNGKey(0), 4)


def test_brax_reacher_randomization_moves_masses_and_gears():
  env, params = _randomized_reacher()
  sys = randomization.system(env.core)
  assert set(params) == {"link.inertia.mass", "actuator.gear"}
  mass = np.asarray(params["link.inertia.mass"]) / np.asarray(sys.link.inertia.mass)
  gear = np.asarray(params["actuator.gear"]) / np.asarray(sys.actuator.gear)
  assert mass.shape == (4, 3) and gear.shape == (4, 2)
  assert np.all((mass >= 0.5) & (mass <= 2.0)) and len(np.unique(mass)) == mass.size
  assert np.all((gear >= 0.5) & (gear <= 1.5)) and len(np.unique(gear)) == gear.size


@pytest.mark.slow  # ~50 s: compiling Brax's positional pipeline
def test_brax_pipelines_read_the_randomized_masses_and_gears():
  env, params = _randomized_reacher()
  # Same initial state and action, the envs' own masses and gears: the arm moves differently.
  with jax.numpy_rank_promotion("allow"):  # Brax's pipelines rely on rank promotion
    start = jax.vmap(env.reset)(jnp.stack([jax.random.PRNGKey(1)] * 4), params)
    obs = np.asarray(jax.jit(jax.vmap(env.step))(start, jnp.ones((4, env.action_size))).obs)
  assert not np.allclose(obs[0], obs[1])


def test_a_checkpointed_randomized_state_continues_bit_identically(tmp_path):
  cfg = tiny(**RANDOMIZED)
  env, networks, state = fresh(cfg)
  step = jax.jit(make_train_step(cfg, env, networks))
  straight = state
  for _ in range(4):
    straight, _ = step(straight)
  cut = step(step(state)[0])[0]
  checkpoints = checkpoint.Checkpointer(tmp_path, keep=1, asynchronous=False)
  checkpoints.save(2, cut, {})
  resumed, _ = checkpoints.restore_latest(jax.tree.map(jnp.zeros_like, cut))
  for _ in range(2):
    resumed, _ = step(resumed)
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(straight))
  chex.assert_trees_all_equal(straight.env_state.params, state.env_state.params)


@pytest.mark.slow  # ~1 minute: three runs of the whole trainer
def test_resume_is_bit_identical_and_the_trace_shows_each_envs_parameters(tmp_path, capsys):
  # Dict observations and randomization together; 2 chunks, each ends in a reset of every env.
  cfg = tiny(
    **RANDOMIZED,
    env="builtin/cartpole_privileged",
    value_obs_key="privileged_state",
    num_evals=3,
    num_resets_per_eval=1,
  )
  whole, resumed = whole_and_resumed(cfg, tmp_path)
  chex.assert_trees_all_equal(jax.device_get(resumed.state), jax.device_get(whole.state))
  assert set(resumed.state.env_state.params) == {
    "pole_mass",
    "half_length",
    "cart_mass",
    "force_mag",
  }

  out = evaluate.main([str(tmp_path / "whole"), "--episodes", "3", "--no-video"])
  with np.load(out / evaluate.TRACE_FILE) as npz:
    pole_mass = npz["env_params/pole_mass"]
  assert pole_mass.shape == (3,) and len(np.unique(pole_mass)) == 3
