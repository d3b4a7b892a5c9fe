"""What many tests share: a config small enough to compile and train in seconds, a fresh
train state, jitted steps with every state kept, the environment of a training subprocess, and
a count of what XLA compiles."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from ppo_jax import PPOConfig, normalization, rollout, train
from ppo_jax.step import init_state, make_env_and_networks, make_train_step


def tiny(**overrides) -> PPOConfig:
  settings = dict(
    env="builtin/cartpole_balance",
    num_timesteps=2048,
    num_envs=8,
    batch_size=8,
    num_minibatches=4,
    unroll_length=8,
    num_updates_per_batch=2,
    episode_length=100,
    policy_hidden_layer_sizes=(16, 16),
    value_hidden_layer_sizes=(16, 16),
    reward_scaling=1.0,
    num_evals=3,
    num_eval_envs=4,
  )
  return PPOConfig(**{**settings, **overrides})


def fresh(cfg: PPOConfig, env=None):
  """(env, networks, initial train state) of `cfg`; `env` replaces the configured one."""
  default_env, networks = make_env_and_networks(cfg)
  env = env or default_env
  return env, networks, init_state(cfg, env, networks)


def first_rollout(cfg: PPOConfig):
  """One iteration's rollout from a fresh state: (networks, the initial train state, its
  transitions, the normalizer updated with their observations, as the train step does)."""
  env, networks, state = fresh(cfg)
  _, transitions, _ = rollout.collect(
    env,
    networks,
    state.params.policy,
    state.normalizer,
    state.env_state,
    jax.random.PRNGKey(1),
    cfg.unrolls_per_iteration,
    cfg.unroll_length,
  )
  return networks, state, transitions, normalization.update(state.normalizer, transitions.obs)


def run_steps(cfg: PPOConfig, iterations: int, env=None):
  """`iterations` jitted train steps: (the states [initial, after each], stacked metrics)."""
  env, networks, state = fresh(cfg, env)
  step = jax.jit(make_train_step(cfg, env, networks))
  states, metrics = [jax.device_get(state)], []
  for _ in range(iterations):
    state, m = step(state)
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return states, {k: np.array([m[k] for m in metrics]) for k in metrics[0]}


def child_environment(cache: Path | None) -> dict[str, str]:
  """os.environ for a training subprocess: CPU, XLA's backend optimizations off (half the
  compile time; every such child compiles alike, so their runs are bit-identical), and the
  persistent compilation cache `cache` if given."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip()}
  if cache is not None:
    env.update(
      JAX_COMPILATION_CACHE_DIR=str(cache),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
  return env


# What JAX records for each program it hands to XLA, compiled or loaded from a persistent cache.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations() -> Iterator[list[str]]:
  """The names of the programs compiled (or loaded from the persistent cache) in the block; a
  program JAX already holds in memory is not compiled again and does not count."""
  names = []

  def listen(event: str, seconds: float, **kwargs) -> None:
    if event == BACKEND_COMPILE_EVENT:
      names.append(kwargs.get("fun_name", "?"))

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


class Interrupt(Exception):
  """Raised from a progress_fn to stop a run as a kill would."""


def whole_and_resumed(cfg: PPOConfig, directory: Path):
  """(a run of `cfg` in directory/whole, the same run stopped after its first chunk in
  directory/cut and resumed there): bit-identical resume makes their states equal."""
  whole = train(cfg, directory / "whole", show_progress=False)

  def stop_after_one_chunk(record):
    if record["env_steps"] == cfg.iterations_per_chunk * cfg.env_steps_per_iteration:
      raise Interrupt

  try:
    train(cfg, directory / "cut", show_progress=False, progress_fn=stop_after_one_chunk)
  except Interrupt:
    pass
  else:
    raise AssertionError("the run was not stopped after its first chunk")
  return whole, train(cfg, directory / "cut", resume=True, show_progress=False)
