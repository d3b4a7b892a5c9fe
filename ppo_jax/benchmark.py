"""Throughput of the training step against rollout alone, on the same envs, networks and devices."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import numpy as np

import envs
from ppo_jax import sharding
from ppo_jax.config import PPOConfig
from ppo_jax.programs import lower_programs, matmul_precision, over_seeds, timed_compile
from ppo_jax.rollout import collect
from ppo_jax.step import TrainState, make_env_and_networks


@dataclasses.dataclass(frozen=True)
class Throughput:
  """Environment steps per second of training and of rollout alone, and compile times."""

  train_sps: float
  rollout_sps: float
  train_compile_seconds: float
  rollout_compile_seconds: float
  num_devices: int = 1

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


def _best_seconds(call, repeats: int) -> float:
  """The shortest of `repeats` timed calls (each waits for the device)."""
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    jax.block_until_ready(call())
    best = min(best, time.perf_counter() - started)
  return best


def measure(
  cfg: PPOConfig,
  iterations: int = 2,
  repeats: int = 2,
  devices: Sequence[jax.Device] | None = None,
) -> Throughput:
  """Times `iterations` training iterations (one compiled chunk) against rollout alone.

  The programs are those `train` runs, laid out on `devices` (the first device by default).
  Evaluation is excluded; each figure is the best of `repeats` runs after compilation.
  """
  cfg = dataclasses.replace(
    cfg, num_timesteps=iterations * cfg.env_steps_per_iteration, num_evals=2
  )
  devices = list(devices or jax.devices()[:1])
  env, networks = make_env_and_networks(cfg)
  layout = sharding.make_layout(cfg, devices)
  put = np.asarray if layout is None else layout.put
  seeds = put(np.stack([jax.random.PRNGKey(cfg.seed + i) for i in range(cfg.num_seeds)]))
  lowered, abstract = lower_programs(cfg, env, networks, layout, seeds, seeds)
  init, _ = timed_compile(lowered["init"], "init")
  state = init(seeds)
  chunk, train_compile = timed_compile(lowered["chunk"], "chunk")
  with sharding.mesh_context(layout), matmul_precision(cfg):
    options = {} if layout is None else {"in_shardings": (layout.state(abstract),)}
    rollout = over_seeds(make_rollout_only(cfg, env, networks), cfg.num_seeds)
    rollout = jax.jit(rollout, **options).lower(abstract)
  rollout, rollout_compile = timed_compile(rollout, "rollout")

  def train_once():
    nonlocal state
    state, metrics = chunk(state)  # the chunk takes (donates) the state and returns the next
    return metrics

  steps = cfg.iterations_per_chunk * cfg.env_steps_per_iteration * cfg.num_seeds
  return Throughput(
    train_sps=steps / _best_seconds(train_once, repeats),
    rollout_sps=steps / _best_seconds(lambda: rollout(state), repeats),
    train_compile_seconds=train_compile,
    rollout_compile_seconds=rollout_compile,
    num_devices=len(devices),
  )
