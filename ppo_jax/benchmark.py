"""Throughput of the training step against rollout alone, on the same envs and networks."""

from __future__ import annotations

import dataclasses
import time

import jax

import envs
from ppo_jax.config import PPOConfig
from ppo_jax.rollout import collect
from ppo_jax.step import TrainState, init_state, make_env_and_networks, make_train_chunk


@dataclasses.dataclass(frozen=True)
class Throughput:
  """Environment steps per second of training and of rollout alone, and compile times."""

  train_sps: float
  rollout_sps: float
  train_compile_seconds: float
  rollout_compile_seconds: float

  @property
  def ratio(self) -> float:
    """Training SPS as a fraction of rollout-only SPS."""
    return self.train_sps / self.rollout_sps


def make_rollout_only(cfg: PPOConfig, env: envs.Environment, networks):
  """Same unrolls as `iterations_per_chunk` training iterations: env step + policy, no learning."""

  def run(state: TrainState):
    def one_iteration(env_state, key):
      env_state, _, stats = collect(
        env,
        networks,
        state.params.policy,
        state.normalizer,
        env_state,
        key,
        cfg.unrolls_per_iteration,
        cfg.unroll_length,
      )
      return env_state, stats.episodes

    keys = jax.random.split(state.key, cfg.iterations_per_chunk)
    return jax.lax.scan(one_iteration, state.env_state, keys)

  return run


def _time(fn, state, repeats: int) -> tuple[float, float]:
  """(compile seconds, best seconds per call of `repeats` calls)."""
  started = time.perf_counter()
  compiled = jax.jit(fn).lower(state).compile()
  compile_seconds = time.perf_counter() - started
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    jax.block_until_ready(compiled(state))
    best = min(best, time.perf_counter() - started)
  return compile_seconds, best


def measure(cfg: PPOConfig, iterations: int = 2, repeats: int = 2) -> Throughput:
  """Times `iterations` training iterations (one compiled chunk) against rollout alone.

  Evaluation is excluded; each figure is the best of `repeats` runs after compilation.
  """
  cfg = dataclasses.replace(
    cfg, num_timesteps=iterations * cfg.env_steps_per_iteration, num_evals=2
  )
  env, networks = make_env_and_networks(cfg)
  state = init_state(cfg, env, networks)
  steps = cfg.iterations_per_chunk * cfg.env_steps_per_iteration
  train_compile, train_seconds = _time(make_train_chunk(cfg, env, networks), state, repeats)
  rollout_compile, rollout_seconds = _time(make_rollout_only(cfg, env, networks), state, repeats)
  return Throughput(
    train_sps=steps / train_seconds,
    rollout_sps=steps / rollout_seconds,
    train_compile_seconds=train_compile,
    rollout_compile_seconds=rollout_compile,
  )
