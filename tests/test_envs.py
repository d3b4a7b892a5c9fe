"""Tests of `envs`: making envs from every source, time limit, auto-reset and action repeat.

The wrapper semantics are checked on the built-in tasks, which compile in well under a
second; Brax and Playground envs (10-20 s to compile each on a CPU) are only made, reset and
stepped once in a batch of 4.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.base import Environment
from ppo_jax import PPOConfig

BATCH = 4


@functools.partial(jax.jit, static_argnums=(0, 3))
def _rollout(env: Environment, key: jax.Array, action: jax.Array, steps: int):
  """Resets one env and applies the same action `steps` times.

  Args:
    env: the (hashable) environment.
    key: reset key.
    action: [action_size] action applied at every step.
    steps: number of agent steps.
  Returns:
    (the reset state, the states after each step stacked [steps, ...]).
  """

  def body(state, _):
    state = env.step(state, action)
    return state, state

  start = env.reset(key)
  _, states = jax.lax.scan(body, start, None, length=steps)
  return start, states


def _at(states, t: int):
  """The state after step t + 1 of a stacked rollout."""
  return jax.tree.map(lambda x: x[t], states)


def _pre_step_core(start, states, t: int):
  """The core state before step t + 1 of a rollout (t = 0 is the reset's)."""
  return start.core if t == 0 else _at(states, t - 1).core


def _fall_step(env: Environment, key: jax.Array, max_steps: int = 200) -> int:
  """Number of agent steps after which cartpole pushed with +1 falls."""
  _, states = _rollout(env, key, jnp.ones(1), max_steps)
  termination = np.asarray(states.termination)
  assert termination.any(), "cartpole pushed at full force should fall"
  return int(np.argmax(termination)) + 1


# ---------------------------------------------------------------------------------------
# envs.make on every source


@pytest.mark.parametrize(
  "name",
  [
    "builtin/cartpole_balance",
    "builtin/pendulum_swingup",
    "brax/inverted_pendulum",
    "playground/CartpoleBalance",
  ],
)
def test_make_reset_and_step_batched(name):
  if name.startswith("playground/"):
    # MJX itself relies on implicit rank promotion, which the strict conftest forbids.
    with jax.numpy_rank_promotion("allow"):
      _check_reset_and_step_batched(name)
  else:
    _check_reset_and_step_batched(name)


def _check_reset_and_step_batched(name: str):
  env = envs.make(name)
  assert isinstance(env, Environment)
  assert env.name == name
  obs_size, action_size = env.observation_size, env.action_size
  assert obs_size > 0 and action_size > 0

  # Two steps in a scan: the reset state must have the same types as a stepped one, as the
  # trainer's rollout scan requires. One compile for reset and step keeps the test short.
  def body(state, action):
    state = env.step(state, action)
    return state, state

  @jax.jit
  @jax.vmap
  def reset_and_step(key, actions):
    start = env.reset(key)
    _, states = jax.lax.scan(body, start, actions)
    return start, states

  keys = jax.random.split(jax.random.key(0), BATCH)
  actions = jax.random.uniform(jax.random.key(1), (BATCH, 2, action_size), minval=-1, maxval=1)
  start, states = reset_and_step(keys, actions)

  for state in (start, jax.tree.map(lambda x: x[:, -1], states)):
    assert state.obs.shape == (BATCH, obs_size)
    assert state.final_obs.shape == (BATCH, obs_size)
    for field in (state.reward, state.termination, state.truncation, state.episode_return):
      assert field.shape == (BATCH,)
    assert state.steps.shape == (BATCH,)
    for leaf in (state.obs, state.final_obs, state.reward, state.termination, state.truncation):
      assert np.all(np.isfinite(leaf))
  assert states.obs.dtype == jnp.float32
  np.testing.assert_array_equal(start.steps, 0)
  np.testing.assert_array_equal(start.reward, 0.0)
  # Different reset keys give different starts.
  assert len({tuple(np.asarray(o)) for o in start.obs}) == BATCH


def test_make_defaults_per_source():
  brax_env = envs.make("brax/inverted_pendulum")
  assert brax_env.core.backend == "generalized"
  assert brax_env.episode_length == 1000 and brax_env.action_repeat == 1
  positional = envs.make("brax/inverted_pendulum", backend="positional")
  assert positional.core.backend == "positional"
  assert positional.observation_size == brax_env.observation_size

  playground_env = envs.make("playground/CartpoleBalance")
  assert str(playground_env.core.mjx_model.impl.value) == "jax"
  assert playground_env.episode_length == 1000

  cartpole = envs.make("builtin/cartpole_balance")
  assert cartpole.episode_length == 500 and cartpole.solved_threshold == 475.0
  assert envs.make("builtin/pendulum_swingup", episode_length=7).episode_length == 7


# ---------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
  "name, listed",
  [
    ("brax/not_an_env", "inverted_pendulum"),
    ("playground/CartpoleBalanse", "CartpoleBalance"),
    ("builtin/x", "cartpole_balance"),
    ("nosource", "cartpole_balance"),
    ("nosource/cartpole_balance", "did you mean 'builtin/cartpole_balance'.*envs.register"),
    ("builtin/", "cartpole_balance"),
  ],
)
def test_unknown_name_lists_available(name, listed):
  with pytest.raises(ValueError, match=listed):
    envs.make(name)


def test_brax_and_playground_names_registered_after_import_are_found(monkeypatch):
  from brax import envs as brax_envs
  from mujoco_playground import dm_control_suite
  from mujoco_playground._src.dm_control_suite import cartpole

  # The registrations below are undone after the test (setitem restores each registry).
  monkeypatch.setitem(brax_envs._envs, "my_pendulum", None)
  monkeypatch.setitem(dm_control_suite._envs, "MyBalance", None)
  monkeypatch.setitem(dm_control_suite._cfgs, "MyBalance", None)
  brax_envs.register_environment("my_pendulum", brax_envs._envs["inverted_pendulum"])
  dm_control_suite.register_environment(
    "MyBalance", dm_control_suite._envs["CartpoleBalance"], cartpole.default_config
  )
  assert {"brax/my_pendulum", "playground/MyBalance"} <= set(envs.available())
  assert envs.make("brax/my_pendulum").observation_size == 4
  with jax.numpy_rank_promotion("allow"):  # MJX relies on rank promotion
    assert envs.make("playground/MyBalance").observation_size == 5


def test_register_refuses_a_built_in_source_and_a_bad_name():
  with pytest.raises(ValueError, match="the source 'brax' is built in"):
    envs.register("brax/mine", lambda: None)
  with pytest.raises(ValueError, match="must be '<source>/<task>'"):
    envs.register("mine", lambda: None)


def test_a_registered_env_takes_only_its_own_backends(monkeypatch):
  from envs.builtin import CartpoleBalance

  monkeypatch.setattr(envs, "_REGISTERED", {})
  made = []
  envs.register(
    "mylab/cartpole",
    lambda backend="x": made.append(backend) or CartpoleBalance(),
    backends=("x", "y"),
  )
  assert envs.make("mylab/cartpole", backend="y").episode_length == 500  # the core's default
  assert made == ["y"]
  with pytest.raises(ValueError, match=r"backend \('z'\) must be one of \('x', 'y'\)"):
    envs.make("mylab/cartpole", backend="z")
  with pytest.raises(ValueError, match="env_backend"):
    PPOConfig(env="mylab/cartpole", env_backend="z")


def test_backend_rejected_for_builtin():
  with pytest.raises(ValueError, match="backend"):
    envs.make("builtin/cartpole_balance", backend="generalized")


def test_available_lists_every_source():
  names = envs.available()
  for name in (
    "builtin/cartpole_balance",
    "builtin/pendulum_swingup",
    "brax/inverted_pendulum",
    "playground/CartpoleBalance",
  ):
    assert name in names
  assert {n.partition("/")[0] for n in names} == set(envs.SOURCES)
  # Playground's robots are offered; `make` checks their assets (test_playground_robots.py).
  assert "playground/Go1JoystickFlatTerrain" in names


# ---------------------------------------------------------------------------------------
# Time limit, final observation and auto-reset


def test_time_limit_truncates_and_keeps_final_obs():
  env = envs.make("builtin/pendulum_swingup", episode_length=7)
  action = jnp.array([0.5])
  start, states = _rollout(env, jax.random.key(3), action, 21)

  truncation = np.asarray(states.truncation)
  expected = np.zeros(21)
  expected[[6, 13, 20]] = 1.0
  np.testing.assert_array_equal(truncation, expected)
  np.testing.assert_array_equal(states.termination, 0.0)
  np.testing.assert_array_equal(states.done, expected)
  np.testing.assert_array_equal(states.steps, [1, 2, 3, 4, 5, 6, 0] * 3)

  for t in (6, 13):
    state = _at(states, t)
    # The final observation is where the core env got to from the pre-step state ...
    reached = env.core.step(_pre_step_core(start, states, t), jnp.clip(action, -1, 1))
    np.testing.assert_allclose(state.final_obs, reached.obs, rtol=1e-6, atol=1e-6)
    # ... and the observation to act on comes from a fresh reset.
    assert not np.allclose(state.obs, state.final_obs)
    cos, sin, theta_dot = np.asarray(state.obs)
    np.testing.assert_allclose(cos**2 + sin**2, 1.0, rtol=1e-5)
    assert abs(theta_dot) <= 1.0  # Reset speeds are drawn from [-1, 1].
    np.testing.assert_array_equal(state.obs, state.core.obs)

  # Off the reset steps, final_obs is just the observation.
  not_done = expected == 0
  np.testing.assert_array_equal(states.final_obs[not_done], states.obs[not_done])
  np.testing.assert_array_equal(start.final_obs, start.obs)


def test_step_metrics_are_those_of_the_step_taken():
  # On the step that ends an episode, the metrics must be the last step's (like the
  # reward), not those of the reset state that replaces it.
  env = envs.make("builtin/pendulum_swingup", episode_length=3)
  _, states = _rollout(env, jax.random.key(0), jnp.array([-0.25]), 3)
  np.testing.assert_allclose(states.metrics["torque"], [0.5, 0.5, 0.5])


def test_termination_is_not_a_truncation():
  key = jax.random.key(5)
  env = envs.make("builtin/cartpole_balance")
  fall = _fall_step(env, key)
  assert 1 < fall <= 100

  _, states = _rollout(env, key, jnp.ones(1), fall)
  np.testing.assert_array_equal(states.termination, np.eye(fall)[-1])
  np.testing.assert_array_equal(states.truncation, 0.0)
  last = _at(states, fall - 1)
  physics = np.asarray(last.final_obs)
  assert abs(physics[2]) > 12 * np.pi / 180 or abs(physics[0]) > 2.4
  assert last.steps == 0
  np.testing.assert_array_less(np.abs(last.obs), 0.05)  # Fresh start in [-0.05, 0.05].

  # A fall on the step the time limit is reached counts as a termination only.
  limited = envs.make("builtin/cartpole_balance", episode_length=fall)
  _, states = _rollout(limited, key, jnp.ones(1), fall)
  np.testing.assert_array_equal(states.termination, np.eye(fall)[-1])
  np.testing.assert_array_equal(states.truncation, 0.0)

  # One step earlier, the same episode is truncated instead.
  shorter = envs.make("builtin/cartpole_balance", episode_length=fall - 1)
  _, states = _rollout(shorter, key, jnp.ones(1), fall - 1)
  np.testing.assert_array_equal(states.termination, 0.0)
  np.testing.assert_array_equal(states.truncation, np.eye(fall - 1)[-1])


def test_auto_reset_draws_fresh_starts():
  env = envs.make("builtin/pendulum_swingup", episode_length=5)
  action = jnp.zeros(1)
  start_a, states_a = _rollout(env, jax.random.key(0), action, 15)
  start_b, _ = _rollout(env, jax.random.key(1), action, 15)
  assert not np.allclose(start_a.obs, start_b.obs)

  episode_starts = [start_a.obs] + [states_a.obs[t] for t in (4, 9, 14)]
  for i in range(len(episode_starts)):
    for j in range(i):
      assert not np.allclose(episode_starts[i], episode_starts[j])

  # The same holds across a batch: each env gets its own reset key.
  keys = jax.random.split(jax.random.key(2), BATCH)
  _, states = jax.vmap(lambda key: _rollout(env, key, action, 5))(keys)
  restarted = np.asarray(states.obs[:, -1])
  assert len({tuple(o) for o in restarted}) == BATCH


def test_without_auto_reset_an_ended_episode_is_not_reset():
  env = envs.make("builtin/cartpole_balance")
  key = jax.random.key(3)
  fall = _fall_step(env, key)
  _, states = _rollout(env, key, jnp.ones(1), fall)
  before = _at(states, fall - 2) if fall > 1 else env.reset(key)

  kept = jax.jit(lambda s, a: env.step(s, a, auto_reset=False))(before, jnp.ones(1))
  reset = _at(states, fall - 1)
  assert kept.termination == 1.0 and reset.termination == 1.0
  np.testing.assert_array_equal(kept.final_obs, reset.final_obs)
  np.testing.assert_array_equal(kept.obs, kept.final_obs)  # the fallen pole, not a new start
  assert not np.allclose(reset.obs, reset.final_obs)
  np.testing.assert_array_equal(jax.random.key_data(kept.key), jax.random.key_data(before.key))
  assert kept.reward == reset.reward and kept.steps == reset.steps == 0


# ---------------------------------------------------------------------------------------
# Action repeat


def test_action_repeat_sums_rewards_of_core_steps():
  env = envs.make("builtin/pendulum_swingup", action_repeat=2)
  assert env.max_episode_steps == env.episode_length // 2
  action = jnp.array([0.7])
  start, states = _rollout(env, jax.random.key(4), action, 3)

  core = start.core
  for t in range(3):
    first = env.core.step(core, action)
    second = env.core.step(first, action)
    state = _at(states, t)
    np.testing.assert_allclose(state.reward, first.reward + second.reward, rtol=1e-6)
    np.testing.assert_allclose(state.obs, second.obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state.final_obs, second.obs, rtol=1e-6, atol=1e-6)
    core = second
  np.testing.assert_array_equal(states.steps, [1, 2, 3])


def test_action_repeat_stops_at_termination():
  env = envs.make("builtin/cartpole_balance", action_repeat=2)
  start = env.reset(jax.random.key(0))
  # Pole just inside the 12 degree limit and falling: the first repeat terminates.
  physics = jnp.array([0.0, 0.0, 0.2, 2.0])
  start = start.replace(core=start.core.replace(physics=physics, obs=physics))
  action = jnp.ones(1)
  state = jax.jit(env.step)(start, action)

  fallen = env.core.step(start.core, action)
  assert fallen.done == 1.0
  assert state.termination == 1.0 and state.truncation == 0.0
  np.testing.assert_allclose(state.reward, 1.0)  # One core step's reward, not two.
  np.testing.assert_allclose(state.final_obs, fallen.obs, rtol=1e-6)
  assert state.steps == 0 and state.episode_return == 0.0

  # Without the fall, two repeats give two rewards.
  upright = jnp.zeros(4)
  start = start.replace(core=start.core.replace(physics=upright, obs=upright))
  state = jax.jit(env.step)(start, jnp.zeros(1))
  np.testing.assert_allclose(state.reward, 2.0)
  assert state.termination == 0.0


# ---------------------------------------------------------------------------------------
# Episode return


def test_episode_return_accumulates_and_resets_at_done():
  env = envs.make("builtin/pendulum_swingup", episode_length=4)
  start, states = _rollout(env, jax.random.key(6), jnp.array([0.3]), 10)
  assert start.episode_return == 0.0

  rewards = np.asarray(states.reward)
  done = np.asarray(states.done)
  expected, running = [], 0.0
  for reward, d in zip(rewards, done, strict=True):
    running = 0.0 if d else running + reward
    expected.append(running)
  np.testing.assert_allclose(states.episode_return, expected, rtol=1e-5)
  np.testing.assert_array_equal(done, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0])
  assert np.all(rewards < 0)  # Pendulum costs are negative: the sums are not trivially 0.


# ---------------------------------------------------------------------------------------
# Configuration errors


def test_episode_length_must_be_divisible_by_action_repeat():
  core = envs.builtin.PendulumSwingup()
  with pytest.raises(ValueError, match="divisible by action_repeat"):
    Environment(core=core, name="builtin/pendulum_swingup", episode_length=7, action_repeat=2)
  with pytest.raises(ValueError, match="divisible by action_repeat"):
    envs.make("builtin/pendulum_swingup", episode_length=7, action_repeat=2)
  with pytest.raises(ValueError, match="divisible by action_repeat"):
    envs.make("builtin/cartpole_balance", action_repeat=3)  # 500 steps by default.
  env = Environment(core=core, name="p", episode_length=8, action_repeat=2)
  assert env.max_episode_steps == 4


@pytest.mark.parametrize(
  "kwargs, field",
  [
    ({"episode_length": 0}, "episode_length"),
    ({"episode_length": -5}, "episode_length"),
    ({"action_repeat": 0}, "action_repeat"),
  ],
)
def test_nonpositive_sizes_raise(kwargs, field):
  with pytest.raises(ValueError, match=field):
    envs.make("builtin/pendulum_swingup", **kwargs)
