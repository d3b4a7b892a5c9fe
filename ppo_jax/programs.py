"""The compiled programs of a run: the initial state, the training chunk, the evaluator and the
split of the evaluation keys.

Each runs over the seeds of a panel (`over_seeds`), is laid out on the devices
(`ppo_jax.sharding`) and is compiled ahead of the training loop: XLA compiles each program on a
thread of its own while the next one is traced. Nothing the loop runs is compiled after them, so
a run never stalls in a compilation nobody announced. Every program is traced under the config's
`matmul_precision`. JAX's persistent compilation cache (`use_compilation_cache`) lets a second
run of the same programs load them instead of compiling them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache

import envs
from ppo_jax import sharding
from ppo_jax.config import PPOConfig
from ppo_jax.monitor import PolicySnapshot
from ppo_jax.networks import ActorCritic
from ppo_jax.step import TrainState, init_state, make_evaluator, make_train_chunk

# The initial state's program runs once: XLA's backend optimizations would cost more compile
# time than they can save (brax/inverted_pendulum: 5.9 s -> 3.0 s, 10.5 -> 4.5 CPU seconds).
COMPILER_OPTIONS = {"init": {"xla_backend_optimization_level": 0}}

# On the CPU, XLA hands matrix products and some reductions to YNNPACK, unless told otherwise.
# Left to XLA's own threaded kernels, the training chunk ran 10-17% faster on a 2-core AVX2 CPU
# (brax/inverted_pendulum with Brax's settings, where the value network's 256-wide products
# dominate: 16.4 -> 13.6 s and 15.7 -> 14.1 s a chunk, the two programs alternating in one
# process), for 1-3 s more of the chunk's compilation.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(program: str) -> dict[str, Any]:
  """XLA's options for the program of that name ("init", "chunk", "evaluator", ...)."""
  options = dict(COMPILER_OPTIONS.get(program, {}))
  if jax.default_backend() == "cpu" and _knows_cpu_options():
    options |= CPU_COMPILER_OPTIONS
  return options


@functools.cache
def _knows_cpu_options() -> bool:
  """Whether this jaxlib knows CPU_COMPILER_OPTIONS (older ones have no YNNPACK fusions)."""
  try:
    jax.jit(lambda x: x).lower(0.0).compile(compiler_options=CPU_COMPILER_OPTIONS)
  except jax.errors.JaxRuntimeError:
    return False
  return True


def default_cache_dir() -> Path:
  """Where compiled programs are kept between runs: $PPO_JAX_CACHE_DIR, else the user's cache
  folder ($XDG_CACHE_HOME or ~/.cache)/ppo_jax/jax_compilation_cache."""
  if os.environ.get("PPO_JAX_CACHE_DIR"):
    return Path(os.environ["PPO_JAX_CACHE_DIR"])
  base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
  return base / "ppo_jax" / "jax_compilation_cache"


def use_compilation_cache(cache: bool | str | Path) -> str | None:
  """Turns on JAX's persistent compilation cache for this process, so that a second run of the
  same programs loads them instead of compiling them.

  Args:
    cache: True for `default_cache_dir()`, a directory, or False to leave JAX as it is. A cache
      directory the process already set (JAX_COMPILATION_CACHE_DIR, jax.config) wins.
  Returns:
    The directory in use, or None.
  """
  current = jax.config.jax_compilation_cache_dir
  if current or cache is False:
    return current
  directory = default_cache_dir() if cache is True else Path(cache)
  directory.mkdir(parents=True, exist_ok=True)
  compilation_cache.set_cache_dir(str(directory))
  compilation_cache.reset_cache()  # takes effect even after earlier compilations
  return str(directory)


@dataclasses.dataclass(frozen=True)
class Programs:
  """A run's compiled programs.

  Attributes:
    init: seed keys [S, 2] -> the panel's fresh TrainState.
    chunk: state -> (state, metrics [S, iterations_per_chunk, ...]); the state is donated.
    evaluator: (policies, keys [S, 2]) -> (Episodes, Trace), one evaluation per seed.
    eval_keys: keys [S, 2] -> (the next keys [S, 2], this evaluation's keys [S, 2]), as
      `jax.random.split` gives them.
    state: the state's shapes, dtypes and (on several devices) shardings.
    compile_seconds: seconds each program took to compile, by name.
  """

  init: jax.stages.Compiled
  chunk: jax.stages.Compiled
  evaluator: jax.stages.Compiled
  eval_keys: jax.stages.Compiled
  state: Any
  compile_seconds: dict[str, float]


def policies(state: TrainState) -> PolicySnapshot:
  """A panel's current policies, as the evaluator takes them."""
  return PolicySnapshot(state.params.policy, state.normalizer)


def matmul_precision(cfg: PPOConfig) -> contextlib.AbstractContextManager:
  """The context to trace a run's programs in: its float32 matrix products at
  `cfg.matmul_precision` (JAX reads the setting when a product is traced)."""
  return jax.default_matmul_precision(cfg.matmul_precision)


def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(the next key, a key to use now) of one seed: `jax.random.split(key)`'s two rows."""
  keys = jax.random.split(key)
  return keys[0], keys[1]


def over_seeds(fn: Callable[..., Any], num_seeds: int) -> Callable[..., Any]:
  """`fn` mapped over the leading seed axis of its arguments and results.

  A panel of several seeds is vmapped. A panel of one seed runs `fn` on that seed alone: the
  same computation, traced in less than half the time, since vmapping a scan or a while loop
  traces its body a second time to batch it (brax/inverted_pendulum: 5.0 s -> 1.8 s for the
  training chunk).
  """
  if num_seeds > 1:
    return jax.vmap(fn)

  def one_seed(*args):
    return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))

  return one_seed


def lower_programs(
  cfg: PPOConfig,
  env: envs.Environment,
  networks: ActorCritic,
  layout: sharding.Layout | None,
  seed_keys: jax.Array,
  eval_key: jax.Array,
  lowered_fn: Callable[[str, jax.stages.Lowered], Any] = lambda name, lowered: lowered,
) -> tuple[dict[str, Any], Any]:
  """Traces and lays out the programs of a panel, one after the other.

  Args:
    lowered_fn: called with each program's name and lowered program as soon as it is lowered,
      before the next is traced (`compile_programs` starts compiling it there).
  Returns:
    ({name: what `lowered_fn` returned for it}, the state's shapes, dtypes and shardings).
  """
  with sharding.mesh_context(layout), matmul_precision(cfg):
    init = over_seeds(functools.partial(init_state, cfg, env, networks), len(seed_keys))
    state = jax.jit(init).trace(seed_keys).out_info  # traced once: `lower` below reuses it
    programs = {
      "init": (init, (seed_keys,), {}),
      "chunk": (
        over_seeds(make_train_chunk(cfg, env, networks), len(seed_keys)),
        (state,),
        {"donate_argnums": 0},
      ),
      "evaluator": (
        over_seeds(make_evaluator(cfg, env, networks), len(seed_keys)),
        (policies(state), eval_key),
        {},
      ),
      "eval_keys": (over_seeds(split_key, len(seed_keys)), (eval_key,), {}),
    }
    if layout is not None:
      state_sharding = layout.state(state)
      programs["init"][2]["out_shardings"] = state_sharding
      programs["chunk"][2].update(
        in_shardings=(state_sharding,), out_shardings=(state_sharding, layout.replicated)
      )
      programs["evaluator"][2].update(
        in_shardings=(layout.per_seed, layout.replicated), out_shardings=layout.replicated
      )
      programs["eval_keys"][2].update(
        in_shardings=(layout.replicated,), out_shardings=layout.replicated
      )
      state = jax.tree.map(
        lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
        state,
        state_sharding,
      )
    lowered = {
      name: lowered_fn(name, jax.jit(fn, **options).lower(*args))
      for name, (fn, args, options) in programs.items()
    }
  return lowered, state


def compile_programs(
  cfg: PPOConfig,
  env: envs.Environment,
  networks: ActorCritic,
  layout: sharding.Layout | None,
  seed_keys: jax.Array,
  eval_key: jax.Array,
) -> Programs:
  """Traces, lays out and compiles the programs of a panel (see the module docstring)."""
  with concurrent.futures.ThreadPoolExecutor() as pool:
    futures, state = lower_programs(
      cfg,
      env,
      networks,
      layout,
      seed_keys,
      eval_key,
      lambda name, program: pool.submit(timed_compile, program, name),
    )
    compiled = {name: future.result() for name, future in futures.items()}
  return Programs(
    **{name: program for name, (program, _) in compiled.items()},
    state=state,
    compile_seconds={name: seconds for name, (_, seconds) in compiled.items()},
  )


def timed_compile(lowered: jax.stages.Lowered, program: str) -> tuple[jax.stages.Compiled, float]:
  """(the program compiled with `compiler_options(program)`, seconds its compilation took)."""
  started = time.perf_counter()
  compiled = lowered.compile(compiler_options=compiler_options(program))
  return compiled, time.perf_counter() - started
