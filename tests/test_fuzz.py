"""Fuzzed PPOConfigs: each is either rejected with a ValueError naming a field, or it trains.

The strategies are built from `dataclasses.fields(PPOConfig)` by each field's type string, so
a field added later is fuzzed too (a string field this file does not know draws its default or
junk). Valid-ish values are small, so an accepted config compiles one training step in
seconds; wrong ones are wrong types (strings, floats for ints, bools, None, lists), NaN and
infinities, huge ints (for fields where a huge valid value costs nothing), zero and negatives.
Nothing but a ValueError may escape: no TypeError, OverflowError, XLA or shape error, whether
from the config, the env factory or the step.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from ppo_jax import PPOConfig, config
from ppo_jax.step import init_state, make_env_and_networks, make_train_step

FIELDS = {field.name: field for field in dataclasses.fields(PPOConfig)}
DEFAULTS = PPOConfig()
BUILTIN_ENVS = ("builtin/cartpole_balance", "builtin/pendulum_swingup")
BAD_ENVS = (
  "builtin/cartpole",
  "builtin/",
  "builtin",
  "brax",
  "",
  "cartpole_balance",
  "gym/CartPole-v1",
  "brax/invertd_pendulum",
  "playground/CartpoleBalanse",
  "builtin/cartpole_balance ",
  "BUILTIN/cartpole_balance",
)

# Fields sized in memory or compile time; an accepted config must stay tiny. The segments per
# iteration (batch_size * num_minibatches <= 64) are the most that any draw collects.
SMALL_SIZES = {
  "num_envs": (1, 2, 3, 4, 8),
  "batch_size": (1, 2, 3, 4, 8),
  "num_minibatches": (1, 2, 3, 4, 8),
  "unroll_length": (1, 2, 3, 4, 8),
  "num_updates_per_batch": (1, 2, 3),
  "episode_length": (1, 2, 3, 4, 6, 8, 12, 50),
  "action_repeat": (1, 2, 3),
  "num_eval_envs": (1, 2, 4),
}
# Int fields whose huge values cost nothing in one step (or are rejected): only these draw
# 2**31 and beyond. Another int field may size a buffer or a loop, and a huge value of it would
# be accepted and then take the memory or time it asks for.
HUGE_OK = {
  "num_timesteps",
  "num_evals",
  "episode_length",
  "checkpoint_interval",
  "seed",
  "monitor_window",
  "clip_idle_iterations",
  "max_nonfinite_iterations",
  "trpo_cg_iterations",
  "trpo_max_backtracks",
}
# Floats with a natural range; any other float field draws around its default.
FLOAT_RANGES = {
  "discounting": (0.5, 1.0),
  "gae_lambda": (0.0, 1.0),
  "clipping_epsilon": (0.05, 0.5),
  "clipping_epsilon_value": (0.05, 0.5),
  "learning_rate": (1e-5, 1e-2),
  "learning_rate_schedule_min_lr": (1e-6, 1e-4),
  "learning_rate_schedule_max_lr": (1e-3, 1e-1),
  "desired_kl": (1e-3, 0.1),
  "target_kl": (1e-3, 0.1),
}
CHOICES = {  # string fields with a closed set of values
  "algorithm": config.ALGORITHMS,
  "learning_rate_schedule": config.SCHEDULES,
  "activation": config.ACTIVATIONS,
  "distribution_type": config.DISTRIBUTION_TYPES,
}

JUNK_TEXT = st.sampled_from(["", " ", "none", "None", "0", "1e-3", "[32, 32]", "é", "a" * 200])
NOT_A_NUMBER = st.sampled_from([float("nan"), float("inf"), -float("inf")])
HUGE_INT = st.sampled_from([2**31, 2**32 - 1, 2**62, 2**63, 2**64, 10**400, -(10**400)])
CONTAINERS = st.sampled_from([[], [1], (1,), {}, {"a": 1}, {1}])


def wrong_type(type_name: str) -> st.SearchStrategy:
  """Values of a type other than `type_name` (None only where the field is not optional)."""
  optional = type_name.endswith("| None")
  base = type_name.removesuffix(" | None")
  none = [] if optional else [st.none()]
  if base == "int":
    return st.one_of(JUNK_TEXT, CONTAINERS, st.booleans(), st.floats(), *none)
  if base == "float":  # an int is a number, so it is no wrong type here
    return st.one_of(JUNK_TEXT, CONTAINERS, st.booleans(), st.just(complex(1, 1)), *none)
  if base == "bool":
    return st.one_of(JUNK_TEXT, CONTAINERS, st.sampled_from([0, 1, 0.0, 1.0]), *none)
  if base == "str":
    return st.one_of(CONTAINERS, st.booleans(), st.integers(), st.floats(), st.just(b"x"), *none)
  if base == "tuple[int, ...]":  # (a list of ints is accepted, as from JSON)
    bad_items = [(1.5,), (2.0, 2), ("a",), (True,), (None,), ((2,),), ([2],)]
    return st.one_of(JUNK_TEXT, st.booleans(), st.integers(), st.sampled_from(bad_items), *none)
  return st.just(object())  # a type this file does not know: nothing typed accepts this


def valid_ish(name: str, type_name: str) -> st.SearchStrategy:
  """Values of the right type, mostly in range and small (range edges included)."""
  default = getattr(DEFAULTS, name)
  optional = type_name.endswith("| None")
  base = type_name.removesuffix(" | None")
  if name == "env":
    strategy = st.sampled_from(BUILTIN_ENVS)
  elif name == "env_backend":
    strategy = st.none()  # built-in envs take none; other values are drawn as bad ones
  elif name in SMALL_SIZES:
    strategy = st.sampled_from(SMALL_SIZES[name])
  elif name == "seed":
    strategy = st.integers(0, 2**31)  # (2**32 - 1, the largest, is drawn as a huge int)
  elif base == "int":  # counts that cost nothing in one step: chunks, checkpoints, windows
    default = default or 1
    strategy = st.one_of(st.just(default), st.integers(default, 2 * default))
    if name == "num_timesteps":
      strategy = st.one_of(strategy, st.sampled_from([1, 10**9]))
  elif base == "float":  # unknown ones between half their default and it (bounds are mostly
    # upper ones, like a fraction's 1, or a positive's 0)
    low, high = FLOAT_RANGES.get(name, (0.5 * (default or 1.0), default or 1.0))
    strategy = st.one_of(
      st.floats(low, high, allow_nan=False),
      st.sampled_from([low, high, default or high]),
    )
  elif base == "bool":
    strategy = st.booleans()
  elif base == "str":
    strategy = st.sampled_from(CHOICES.get(name, (default,)))
  elif base.startswith("tuple"):
    strategy = st.one_of(
      st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=2).map(tuple),
      st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=2),  # a list, as from JSON
    )
  else:  # a type this file does not know: keep the default
    strategy = st.just(default)
  return st.one_of(st.none(), strategy) if optional else strategy


def wild(name: str, type_name: str) -> st.SearchStrategy:
  """Out-of-range values and wrong types (some of which a field may yet accept)."""
  base = type_name.removesuffix(" | None")
  bad = [wrong_type(type_name)]
  if base == "int":
    bad += [st.integers(-3, 0)] + ([HUGE_INT] if name in HUGE_OK else [])
  elif base == "float":
    bad += [NOT_A_NUMBER, st.floats(-2.0, 0.0), st.integers(-1, 2)]
    bad += [st.sampled_from([1.5, 1e300, 10**400, -1e-300])]
  elif base == "str":
    if name == "env":
      bad += [st.sampled_from(BAD_ENVS)]
    elif name == "env_backend":
      bad += [st.sampled_from(["mjx", "generalized", "jax", "warp", "physx"])]
    bad += [JUNK_TEXT, st.text(max_size=12)]
  elif base.startswith("tuple"):
    # (No 2**31: the config takes any positive size, and such a layer takes tens of GiB.)
    bad += [st.sampled_from([(), (0,), (-1,), (4, 0), (10**400,)])]
  return st.one_of(*bad)


@st.composite
def configs(draw, min_wild: int, max_wild: int, consistent: bool = False) -> dict:
  """Keyword arguments for every field: some fields wild, the rest valid-ish.

  With `consistent`, valid-ish sizes also keep the rules between them (num_envs divides
  batch_size * num_minibatches, action_repeat divides episode_length).
  """
  names = sorted(FIELDS)
  wild_names = draw(st.sets(st.sampled_from(names), min_size=min_wild, max_size=max_wild))
  kwargs = {
    name: draw(
      wild(name, FIELDS[name].type) if name in wild_names else valid_ish(name, FIELDS[name].type)
    )
    for name in names
  }
  if consistent and not wild_names & {"num_envs", "batch_size", "num_minibatches"}:
    segments = kwargs["batch_size"] * kwargs["num_minibatches"]
    divisors = [n for n in SMALL_SIZES["num_envs"] if segments % n == 0]
    kwargs["num_envs"] = draw(st.sampled_from(divisors))
  if consistent and not wild_names & {"episode_length", "action_repeat"}:
    kwargs["episode_length"] = kwargs["action_repeat"] * draw(st.sampled_from([1, 2, 4, 16]))
  return kwargs


def names_a_field(message: str) -> bool:
  return any(re.search(rf"\b{name}\b", message) for name in FIELDS)


def trains_or_names_a_field(kwargs: dict) -> bool:
  """Builds, sets up and runs one training step; True if it trained, False if rejected.

  Fails the test for any exception but a ValueError, and for a ValueError naming no field.
  """
  try:
    cfg = PPOConfig(**kwargs)
    env, networks = make_env_and_networks(cfg)
  except ValueError as error:
    assert names_a_field(str(error)), f"ValueError names no field: {error}"
    return False
  assert cfg.env in BUILTIN_ENVS  # the strategies draw no other valid env
  state = init_state(cfg, env, networks)
  state, metrics = jax.device_get(jax.jit(make_train_step(cfg, env, networks))(state))
  # Whatever the numbers (a config that trains to NaN is no escape), one whole iteration ran.
  epochs = cfg.num_updates_per_batch
  assert int(state.iteration) == 1
  assert metrics["approx_kl_per_epoch"].shape == (epochs,)
  updates = epochs * cfg.num_minibatches
  if cfg.target_kl is None:
    assert metrics["minibatch_updates_applied"] == updates
  else:  # the early stop may skip even the first update: the normalizer's shift alone
    # moves the policy before it (as in Brax, the statistics take in the rollout first)
    assert 0 <= metrics["minibatch_updates_applied"] <= updates
  assert metrics["episodes"] == metrics["terminations"] + metrics["truncations"]
  return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(min_wild=1, max_wild=4))
def test_bad_configs_are_rejected_naming_a_field(kwargs):
  # Rejections take milliseconds; the rare accepted config (an extreme value a field allows)
  # trains like any other.
  event("trained" if trains_or_names_a_field(kwargs) else "rejected")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(min_wild=0, max_wild=1, consistent=True))
def test_valid_ish_configs_train_one_step(kwargs):
  # Mostly valid: at most one field drawn wild, sizes that fit together. Examples that break
  # a rule all the same (a wild value, TRPO's rules) are rejected as above and not counted.
  assume(trains_or_names_a_field(kwargs))


@pytest.fixture(scope="module")
def valid_kwargs() -> dict:
  kwargs = dict(
    env="builtin/cartpole_balance",
    num_envs=2,
    batch_size=2,
    num_minibatches=2,
    unroll_length=2,
    episode_length=8,
    policy_hidden_layer_sizes=(4,),
    value_hidden_layer_sizes=(4,),
  )
  PPOConfig(**kwargs)
  return kwargs


@settings(
  max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_one_wrong_type_is_named(valid_kwargs, data):
  # A wrong type in one field is named in the error, whichever field it is; no training.
  name = data.draw(st.sampled_from(sorted(FIELDS)), label="field")
  value = data.draw(wrong_type(FIELDS[name].type), label="value")
  with pytest.raises(ValueError, match=rf"\b{name}\b"):
    PPOConfig(**{**valid_kwargs, name: value})


@pytest.mark.parametrize(
  "overrides, field",
  [
    ({"num_timesteps": 10**400}, "num_timesteps"),  # math.isfinite raised OverflowError
    ({"learning_rate": 10**400}, "learning_rate"),
    ({"seed": 2**63}, "seed"),  # jax.random.PRNGKey raised OverflowError
    ({"seed": 2**32}, "seed"),  # ... and takes seeds modulo 2**32: 2**32 was seed 0
    ({"episode_length": 2**31}, "episode_length"),  # int32 step counter: OverflowError
    ({"num_timesteps": 2**62}, "num_timesteps"),  # int32 iteration counter: OverflowError
    ({"num_evals": 2**40}, "num_evals"),
    ({"policy_hidden_layer_sizes": (10**400,)}, "policy_hidden_layer_sizes"),  # OverflowError
    ({"monitor_window": 2**31}, "monitor_window"),  # a 2**31-long history: 22 GB, killed
    ({"clip_idle_iterations": 2**31}, "clip_idle_iterations"),  # int32 streak: OverflowError
  ],
)
def test_huge_ints_found_by_fuzzing_are_value_errors(overrides, field):
  with pytest.raises(ValueError, match=rf"\b{field}\b"):
    PPOConfig(**overrides)
