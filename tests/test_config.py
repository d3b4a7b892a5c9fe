"""PPOConfig: defaults, derived sizes, and a ValueError naming the field for every bad input."""

import dataclasses
import inspect
import math

import pytest

from ppo_jax import PPOConfig, brax_keywords

# Brax's PPO settings for inverted_pendulum (its training notebook).
INVERTED_PENDULUM = dict(
  env="brax/inverted_pendulum",
  num_timesteps=2_000_000,
  num_evals=20,
  reward_scaling=10.0,
  episode_length=1000,
  normalize_observations=True,
  action_repeat=1,
  unroll_length=5,
  num_minibatches=32,
  num_updates_per_batch=4,
  discounting=0.97,
  learning_rate=3e-4,
  entropy_cost=1e-2,
  num_envs=2048,
  batch_size=1024,
  seed=1,
)


def test_inverted_pendulum_derived_sizes():
  cfg = PPOConfig(**INVERTED_PENDULUM)
  assert cfg.num_segments == 1024 * 32
  assert cfg.unrolls_per_iteration == 16  # 32768 segments over 2048 envs
  assert cfg.minibatch_size == 1024 * 5
  assert cfg.env_steps_per_iteration == 1024 * 32 * 5 == 163_840
  assert cfg.num_iterations >= cfg.num_timesteps / cfg.env_steps_per_iteration
  assert cfg.num_iterations >= math.ceil(2_000_000 / 163_840) == 13
  # Brax runs one iteration per evaluation chunk here: 19 chunks after the initial eval.
  assert cfg.num_chunks == 19
  assert cfg.iterations_per_chunk == 1
  assert cfg.num_iterations == 19
  assert cfg.total_env_steps == 19 * 163_840 >= cfg.num_timesteps


def test_action_repeat_counts_in_env_steps():
  cfg = PPOConfig(**{**INVERTED_PENDULUM, "action_repeat": 4})
  assert cfg.env_steps_per_iteration == 1024 * 32 * 5 * 4
  assert cfg.num_iterations * cfg.env_steps_per_iteration >= cfg.num_timesteps


@pytest.mark.parametrize("num_timesteps", [1, 163_840, 163_841, 10_000_000])
def test_num_iterations_covers_num_timesteps(num_timesteps):
  cfg = PPOConfig(**{**INVERTED_PENDULUM, "num_timesteps": num_timesteps})
  assert cfg.num_iterations >= num_timesteps / cfg.env_steps_per_iteration
  assert cfg.num_iterations % cfg.num_chunks == 0
  assert cfg.total_env_steps >= num_timesteps


@pytest.mark.parametrize(
  "overrides, field",
  [
    # Wrong types.
    ({"num_envs": 1.5}, "num_envs"),
    ({"num_envs": True}, "num_envs"),
    ({"learning_rate": "1e-3"}, "learning_rate"),
    ({"normalize_observations": 1}, "normalize_observations"),
    ({"policy_hidden_layer_sizes": (32, "a")}, "policy_hidden_layer_sizes"),
    # Out of range.
    ({"discounting": 0}, "discounting"),
    ({"discounting": 1.5}, "discounting"),
    ({"gae_lambda": -0.1}, "gae_lambda"),
    ({"clipping_epsilon": 0}, "clipping_epsilon"),
    ({"unroll_length": 0}, "unroll_length"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"target_kl": 0}, "target_kl"),
    ({"entropy_cost": -1}, "entropy_cost"),
    ({"num_envs": 0}, "num_envs"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    # Inconsistent sizes.
    ({"num_envs": 1000, "batch_size": 1024, "num_minibatches": 32}, "num_envs"),
    ({"episode_length": 1000, "action_repeat": 3}, "action_repeat"),
    # Unknown choices.
    ({"learning_rate_schedule": "cosine"}, "learning_rate_schedule"),
    ({"activation": "sigmoid"}, "activation"),
    ({"distribution_type": "x"}, "distribution_type"),
    ({"learning_rate_schedule": "constant"}, "learning_rate_schedule"),
    ({"env": "inverted_pendulum"}, "env"),
    ({"env_backend": "physx"}, "env_backend"),
    ({"env": "builtin/cartpole_balance", "env_backend": "mjx"}, "env_backend"),
    ({"env": "playground/CartpoleBalance", "env_backend": "mjx"}, "env_backend"),
  ],
)
def test_bad_input_raises_value_error_naming_the_field(overrides, field):
  # Whole words, so that "env" is not satisfied by "num_envs".
  with pytest.raises(ValueError, match=rf"\b{field}\b"):
    PPOConfig(**overrides)


def test_indivisible_num_envs_says_divisible():
  with pytest.raises(ValueError, match="num_envs") as info:
    PPOConfig(num_envs=1000, batch_size=1024, num_minibatches=32)
  assert "divisible" in str(info.value)


def test_indivisible_episode_length_names_both_fields():
  with pytest.raises(ValueError, match="episode_length") as info:
    PPOConfig(episode_length=1000, action_repeat=3)
  assert "action_repeat" in str(info.value)


def test_env_without_source_lists_the_sources():
  with pytest.raises(ValueError, match="inverted_pendulum") as info:
    PPOConfig(env="inverted_pendulum")
  assert "brax" in str(info.value)


def test_list_of_layer_sizes_is_stored_as_a_tuple():
  cfg = PPOConfig(policy_hidden_layer_sizes=[64, 64], value_hidden_layer_sizes=[128])
  assert cfg.policy_hidden_layer_sizes == (64, 64)
  assert isinstance(cfg.policy_hidden_layer_sizes, tuple)
  assert cfg.value_hidden_layer_sizes == (128,)
  assert isinstance(cfg.value_hidden_layer_sizes, tuple)
  hash(cfg)


def test_config_is_frozen():
  cfg = PPOConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.num_envs = 8  # type: ignore[misc]


def test_config_is_hashable_by_value():
  assert hash(PPOConfig()) == hash(PPOConfig())
  assert PPOConfig() == PPOConfig()
  assert PPOConfig(seed=1) != PPOConfig(seed=2)
  assert len({PPOConfig(), PPOConfig(), PPOConfig(seed=3)}) == 2


def test_replace_is_checked_too():
  cfg = PPOConfig()
  assert dataclasses.replace(cfg, seed=5).seed == 5
  with pytest.raises(ValueError, match="gae_lambda"):
    dataclasses.replace(cfg, gae_lambda=2.0)


@pytest.mark.parametrize(
  "env, backend",
  [("brax/ant", "mjx"), ("brax/ant", "generalized"), ("playground/CheetahRun", "warp")],
)
def test_backend_of_the_source_is_accepted(env, backend):
  assert PPOConfig(env=env, env_backend=backend).env_backend == backend


# Brax's names.


def test_every_brax_ppo_train_keyword_is_a_field_or_documented_as_unsupported():
  from brax.training.agents.ppo import networks as brax_networks
  from brax.training.agents.ppo import train as brax_train

  fields = {field.name for field in dataclasses.fields(PPOConfig)}
  keywords = inspect.signature(brax_train.train).parameters
  for keyword in keywords:
    assert (keyword in fields) != (keyword in brax_keywords.NOT_SUPPORTED), keyword
  assert set(brax_keywords.NOT_SUPPORTED) <= set(keywords)  # no stale entry
  assert all(reason for reason in brax_keywords.NOT_SUPPORTED.values())
  network_keywords = inspect.signature(brax_networks.make_ppo_networks).parameters
  for name in brax_keywords.NETWORK_KEYWORDS:
    assert name in fields and name in network_keywords, name


def test_playgrounds_dm_control_configs_port_as_keyword_arguments():
  from mujoco_playground import registry
  from mujoco_playground.config import dm_control_suite_params

  for name in registry.dm_control_suite.ALL_ENVS:
    published = dm_control_suite_params.brax_ppo_config(name)
    cfg = PPOConfig(env=f"playground/{name}", **published)
    for key, value in published.items():
      assert getattr(cfg, key) == value, (name, key)


def test_brax_schedule_names():
  assert PPOConfig(learning_rate_schedule="NONE").learning_rate_schedule is None
  assert PPOConfig(learning_rate_schedule="ADAPTIVE_KL").learning_rate_schedule == "ADAPTIVE_KL"
  with pytest.raises(ValueError, match="learning_rate_schedule"):
    PPOConfig(learning_rate_schedule="adaptive_kl")


@pytest.mark.parametrize("resets", [0, 1, 3, 10])
@pytest.mark.parametrize("timesteps", [1, 2_000_000, 60_000_000])
def test_iterations_between_evaluations_round_as_braxs(resets, timesteps):
  """Brax: ceil(num_timesteps / (evals after the first * steps per iteration * max(R, 1)))
  iterations, max(R, 1) times, between two evaluations."""
  cfg = PPOConfig(num_timesteps=timesteps, num_resets_per_eval=resets, num_evals=10)
  per_reset = math.ceil(timesteps / (9 * cfg.env_steps_per_iteration * max(resets, 1)))
  assert cfg.iterations_per_reset == per_reset
  assert cfg.iterations_per_chunk == per_reset * max(resets, 1)
  assert cfg.total_env_steps >= timesteps
