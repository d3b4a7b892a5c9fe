"""One environment interface for every source: time limit, action repeat and auto-reset.

A *core* environment (a Brax env, a MuJoCo Playground env or a built-in task) has
`reset(key) -> s` and `step(s, action) -> s`, where `s` carries `obs`, `reward`,
`done` (a termination: the episode ended by failure or success) and `metrics`.
`Environment` wraps it so that, inside one jitted step, it

* repeats each action `action_repeat` times, summing rewards,
* cuts episodes at `episode_length` (a truncation, kept apart from terminations),
* resets finished episodes with a fresh key, and
* keeps the true observation reached before the reset (`final_obs`), so that the value
  of a truncated episode can be bootstrapped from it.

All functions act on one unbatched environment; the trainer vmaps them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax
from flax import struct

from envs import randomization

Observation = jax.Array | dict[str, jax.Array]


class CoreEnv(Protocol):
  """What a source environment must offer (Brax and Playground envs already do)."""

  observation_size: Any  # an int, or a dict of sizes for dict observations
  action_size: int

  def reset(self, key: jax.Array) -> Any: ...

  def step(self, state: Any, action: jax.Array) -> Any: ...


@struct.dataclass
class EnvState:
  """State of one wrapped environment.

  Attributes:
    obs: [obs_size] observation to act on next (already reset if the episode ended), or a
      dict of such vectors (e.g. {"state": ..., "privileged_state": ...}).
    reward: [] reward of the last step (summed over the action repeat).
    termination: [] 1.0 if the last step ended the episode through the task (a fall).
    truncation: [] 1.0 if the last step hit the time limit without a termination.
    final_obs: [obs_size] (or a dict) observation the last step reached, before any reset.
    metrics: per-step metrics the source env reports (e.g. reward terms, contact forces),
      scalars as float32.
    steps: [] agent steps taken in the current episode.
    episode_return: [] undiscounted return of the current episode so far.
    episode_metrics: `metrics` summed over the current episode so far.
    key: RNG key used for the next reset.
    core: the source environment's own state.
    params: this env's randomized system leaves ({leaf path: value}, `envs.randomization`);
      empty without domain randomization. Resets keep them.
  """

  obs: Observation
  reward: jax.Array
  termination: jax.Array
  truncation: jax.Array
  final_obs: Observation
  metrics: dict[str, jax.Array]
  steps: jax.Array
  episode_return: jax.Array
  episode_metrics: dict[str, jax.Array]
  key: jax.Array
  core: Any
  params: dict[str, jax.Array] = struct.field(default_factory=dict)

  @property
  def done(self) -> jax.Array:
    """[] 1.0 where the last step ended the episode (termination or truncation)."""
    return jnp.maximum(self.termination, self.truncation)


@dataclasses.dataclass(frozen=True)
class Environment:
  """A core environment with time limit, action repeat and auto-reset.

  Attributes:
    core: the source environment.
    name: the name it was made under, e.g. "brax/inverted_pendulum".
    episode_length: time limit in simulator steps (as in Brax: counts action repeats).
    action_repeat: how many times each action is applied.
    solved_threshold: episode return at which the task counts as solved, if known.
    randomization_fn: domain randomization, `(sys, rng) -> (randomized_sys, in_axes)` as in
      Brax and Playground (`envs.randomization`), or None.
    backend: the physics that steps it: Brax's pipeline or Playground's implementation as
      `envs.make` chose it (the one asked for, else the source's default), or None.
  """

  core: CoreEnv
  name: str
  episode_length: int
  action_repeat: int = 1
  solved_threshold: float | None = None
  randomization_fn: randomization.RandomizationFn | None = None
  backend: str | None = None

  def __post_init__(self):
    if self.episode_length < 1:
      raise ValueError(f"episode_length ({self.episode_length}) must be >= 1")
    if self.action_repeat < 1:
      raise ValueError(f"action_repeat ({self.action_repeat}) must be >= 1")
    if self.episode_length % self.action_repeat:
      raise ValueError(
        f"episode_length ({self.episode_length}) must be divisible by action_repeat "
        f"({self.action_repeat})"
      )

  @functools.cached_property
  def observation_size(self) -> int | dict[str, int]:
    """The observation's size (a dict of sizes for dict observations), from a reset traced
    once, never run: Brax's own property runs a whole reset op by op (seconds for a MuJoCo
    model) at every access."""
    obs = jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs
    return jax.tree.map(lambda x: int(x.shape[-1]), obs)

  @property
  def action_size(self) -> int:
    return int(self.core.action_size)

  @property
  def max_episode_steps(self) -> int:
    """Agent steps in an episode that reaches the time limit."""
    return self.episode_length // self.action_repeat

  def randomize(self, key: jax.Array, num_envs: int) -> dict[str, jax.Array]:
    """Randomized system leaves for `num_envs` envs, [num_envs, ...] each (none without a
    `randomization_fn`); `reset` takes one env's."""
    if self.randomization_fn is None:
      return {}
    keys = jax.random.split(key, num_envs)
    return randomization.randomize(self.randomization_fn, self.core, keys)

  def reset(self, key: jax.Array, params: dict[str, jax.Array] | None = None) -> EnvState:
    """A fresh episode; `params` are this env's randomized system leaves (`randomize`)."""
    params = {} if params is None else params
    key, core_key = jax.random.split(key)
    core = randomization.with_params(self.core, params).reset(core_key)
    obs = _check_obs(core.obs, self.name)
    zero = jnp.zeros((), jnp.float32)
    metrics = _scalar_metrics(core.metrics)
    return EnvState(
      obs=obs,
      reward=zero,
      termination=zero,
      truncation=zero,
      final_obs=obs,
      metrics=metrics,
      steps=jnp.zeros((), jnp.int32),
      episode_return=zero,
      episode_metrics=jax.tree.map(jnp.zeros_like, metrics),
      key=key,
      core=core,
      params=params,
    )

  def step(self, state: EnvState, action: jax.Array, auto_reset: bool = True) -> EnvState:
    """Applies `action`, then resets the episode if it ended and `auto_reset` is True.

    Args:
      auto_reset: False leaves an ended episode's core as the step reached it (an evaluation,
        which keeps only first episodes, then traces and runs no reset inside its loop).
    """
    source = randomization.with_params(self.core, state.params)
    core, reward, termination = self._repeat(source, state.core, action)
    steps = state.steps + 1
    truncation = jnp.where((steps >= self.max_episode_steps) & (termination == 0), 1.0, 0.0).astype(
      jnp.float32
    )
    final_obs = _check_obs(core.obs, self.name)
    # Like the reward, the metrics are the step's, not those of the reset that follows it.
    metrics = _scalar_metrics(core.metrics)
    done = jnp.maximum(termination, truncation) > 0

    key = state.key
    if auto_reset:
      key, reset_key = jax.random.split(key)
      core = optax.tree.where(done, source.reset(reset_key), core)
    return EnvState(
      obs=_check_obs(core.obs, self.name),
      reward=reward,
      termination=termination,
      truncation=truncation,
      final_obs=final_obs,
      metrics=metrics,
      steps=jnp.where(done, 0, steps),
      episode_return=jnp.where(done, 0.0, state.episode_return + reward),
      episode_metrics=jax.tree.map(
        lambda total, value: jnp.where(done, 0.0, total + value), state.episode_metrics, metrics
      ),
      key=key,
      core=core,
      params=state.params,
    )

  def _repeat(
    self, source: CoreEnv, core: Any, action: jax.Array
  ) -> tuple[Any, jax.Array, jax.Array]:
    """Steps the core env `action_repeat` times; stops accumulating once it terminates."""

    def one(carry, _):
      core, reward, termination = carry
      stepped = source.step(core, action)
      stepped = stepped.replace(reward=_scalar(stepped.reward), done=_scalar(stepped.done))
      alive = termination == 0
      core = optax.tree.where(alive, stepped, core)
      reward = reward + jnp.where(alive, stepped.reward, 0.0)
      termination = jnp.where(alive, stepped.done, termination)
      return (core, reward, termination), None

    zero = jnp.zeros((), jnp.float32)
    if self.action_repeat == 1:
      stepped = source.step(core, action)
      return stepped, _scalar(stepped.reward), _scalar(stepped.done)
    (core, reward, termination), _ = jax.lax.scan(
      one, (core, zero, zero), None, length=self.action_repeat
    )
    return core, reward, termination


def _scalar(x) -> jax.Array:
  # Some sources return Python floats (Brax's inverted_pendulum: `reward = 1.0`).
  return jnp.asarray(x, jnp.float32)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, jax.Array]:
  """The scalar entries of a source env's metrics, as float32 (others have no episode mean)."""
  return {
    name: jnp.asarray(value, jnp.float32) for name, value in metrics.items() if jnp.ndim(value) == 0
  }


def _check_obs(obs: Any, name: str) -> Observation:
  """The observation as float32: a flat vector, or a dict of flat vectors (one per entry)."""
  obs = dict(obs) if isinstance(obs, Mapping) else obs
  entries = obs.values() if isinstance(obs, dict) else [obs]
  if not all(isinstance(x, jax.Array) and x.ndim == 1 for x in entries):
    raise ValueError(
      f"environment {name!r} must return a flat observation vector or a dict of them; got "
      f"{jax.tree.map(lambda x: getattr(x, 'shape', type(x)), obs)}"
    )
  return jax.tree.map(lambda x: x.astype(jnp.float32), obs)
