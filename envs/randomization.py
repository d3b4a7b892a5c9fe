"""Domain randomization: Brax's and Playground's `randomization_fn`, applied per env.

A randomization function has Brax's and Playground's signature,
`randomization_fn(sys, rng) -> (randomized_sys, in_axes)`: given the env's system (a Brax
`System`, a Playground env's `mjx_model`, a built-in task's `sys`) and keys [num_envs, 2], it
returns the system with a leading env axis on the randomized leaves, and `in_axes`, the system's
tree with 0 on those leaves and None elsewhere.

The randomized leaves, one value per env, live in each env's state (`EnvState.params`, keyed by
the leaf's path, e.g. "geom_friction"): checkpoints hold them, the envs layout splits them over
the devices with every other per-env leaf, an auto-reset keeps them, and evaluation traces show
them. A config names its randomization (`PPOConfig.randomization`) in `RANDOMIZATIONS`, so that
presets, the CLI and a resumed run all find the same function; `register` adds one's own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

RandomizationFn = Callable[[Any, jax.Array], tuple[Any, Any]]
RANDOMIZATIONS: dict[str, RandomizationFn] = {}


def register(name: str, fn: RandomizationFn) -> RandomizationFn:
  """Makes `fn` the randomization `PPOConfig(randomization=name)` names; returns `fn`."""
  RANDOMIZATIONS[name] = fn
  return fn


def _system_attribute(core: Any) -> str:
  """Where a core env keeps what `randomization_fn` takes: Playground's `_mjx_model` (its
  `mjx_model` property reads it), else `sys` (Brax's envs and the built-in tasks)."""
  return "_mjx_model" if hasattr(core, "_mjx_model") else "sys"


def system(core: Any) -> Any:
  """The core env's system, as `randomization_fn` takes it."""
  return getattr(core, _system_attribute(core))


def with_params(core: Any, params: dict[str, jax.Array]) -> Any:
  """A shallow copy of the core env whose system has the randomized leaves `params` (one env's);
  the core env itself when there are none. Brax's and Playground's randomization wrappers
  swap the system the same way."""
  if not params:
    return core
  sys = system(core)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(sys)
  sys = jax.tree.unflatten(treedef, [params.get(_name(path), leaf) for path, leaf in leaves])
  swapped = copy.copy(core)
  object.__setattr__(swapped, _system_attribute(core), sys)  # frozen dataclasses too
  return swapped


def randomize(fn: RandomizationFn, core: Any, keys: jax.Array) -> dict[str, jax.Array]:
  """The randomized leaves of `fn` for len(keys) envs: {leaf path: [num_envs, ...]}.

  Raises:
    ValueError: `in_axes` holds an axis other than 0 or None.
  """
  randomized, in_axes = fn(system(core), keys)
  axes, _ = jax.tree_util.tree_flatten_with_path(in_axes, is_leaf=lambda x: x is None)
  names = {_name(path): axis for path, axis in axes if axis is not None}
  if any(axis != 0 for axis in names.values()):
    raise ValueError(f"randomization_fn's in_axes must be 0 or None per leaf; got {names}")
  leaves, _ = jax.tree_util.tree_flatten_with_path(randomized)
  return {_name(path): jnp.asarray(leaf) for path, leaf in leaves if _name(path) in names}


def _name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator=".")


# Examples, by name.


def cartpole(sys, rng: jax.Array):
  """Built-in cart-poles: pole mass x U(0.5, 2), pole half-length x U(0.5, 1.5), cart mass
  x U(0.5, 2) and the actuator's force x U(0.2, 1), per env."""
  low, high = jnp.array([0.5, 0.5, 0.5, 0.2]), jnp.array([2.0, 1.5, 2.0, 1.0])
  scale = jax.vmap(lambda key: jax.random.uniform(key, (4,), minval=low, maxval=high))(rng)
  fields = ("pole_mass", "half_length", "cart_mass", "force_mag")
  randomized = sys.replace(
    **{name: getattr(sys, name) * scale[:, i] for i, name in enumerate(fields)}
  )
  in_axes = jax.tree.map(lambda _: None, sys).replace(**dict.fromkeys(fields, 0))
  return randomized, in_axes


def brax_ant(sys, rng: jax.Array):
  """Brax's ant on the mjx pipeline (the fields Brax's own randomization example moves):
  friction U(0.6, 1.4) on every geom, link masses x U(0.8, 1.2), actuator gains x U(0.8, 1.2)
  (the bias follows the gain, as in Brax's example), per env."""

  @jax.vmap
  def draw(key):
    friction_key, mass_key, gain_key = jax.random.split(key, 3)
    friction = jax.random.uniform(friction_key, (), minval=0.6, maxval=1.4)
    mass = jax.random.uniform(mass_key, sys.body_mass.shape, minval=0.8, maxval=1.2)
    gain = jax.random.uniform(gain_key, (sys.nu,), minval=0.8, maxval=1.2)
    gainprm = sys.actuator_gainprm.at[:, 0].multiply(gain)
    biasprm = sys.actuator_biasprm.at[:, 1].multiply(gain)
    return sys.geom_friction.at[:, 0].set(friction), sys.body_mass * mass, gainprm, biasprm

  friction, mass, gainprm, biasprm = draw(rng)
  fields = {
    "geom_friction": friction,
    "body_mass": mass,
    "actuator_gainprm": gainprm,
    "actuator_biasprm": biasprm,
  }
  in_axes = jax.tree.map(lambda _: None, sys).tree_replace({name: 0 for name in fields})
  return sys.tree_replace(fields), in_axes


def brax_reacher(sys, rng: jax.Array):
  """Brax's reacher, or any Brax env on Brax's own pipelines (generalized, positional, spring),
  which read masses from `link.inertia` and strength from `actuator.gear` rather than from mjx's
  fields: every link's mass x U(0.5, 2) and each actuator's gear x U(0.5, 1.5), per env."""

  @jax.vmap
  def draw(key):
    mass_key, gear_key = jax.random.split(key)
    mass = jax.random.uniform(mass_key, sys.link.inertia.mass.shape, minval=0.5, maxval=2.0)
    gear = jax.random.uniform(gear_key, sys.actuator.gear.shape, minval=0.5, maxval=1.5)
    return sys.link.inertia.mass * mass, sys.actuator.gear * gear

  mass, gear = draw(rng)
  fields = {"link.inertia.mass": mass, "actuator.gear": gear}
  in_axes = jax.tree.map(lambda _: None, sys).tree_replace({name: 0 for name in fields})
  return sys.tree_replace(fields), in_axes


register("cartpole", cartpole)
register("brax_ant", brax_ant)
register("brax_reacher", brax_reacher)
